"""What the business number says in chat. Plain words, and always what to type next."""

from __future__ import annotations

HELP = (
    "InvoiceIQ: send an invoice, get paid by M-PESA.\n\n"
    "• invoice: create an invoice step by step (back and cancel work at every step)\n"
    "• invoice 0712345678 1500 Logo design: create one in one line\n"
    "• invoice Jane 1500 Cake: use a saved customer's name\n"
    "• unpaid: your unpaid invoices\n"
    "• status INV…: where an invoice is\n"
    "• remind INV…: send an invoice again\n"
    "• cancel INV…: cancel an invoice\n"
    "• name Your Business: change your business name\n"
    "• vat on / vat off: whether your prices include VAT\n"
    "• help: this list"
)

WELCOME = (
    "Welcome to InvoiceIQ. Businesses use this number to send invoices that customers pay by "
    "M-PESA.\n\nTo start sending invoices, type name followed by your business name, like:\n"
    "name Wanjiku Designs"
)

BECOME_MERCHANT = "Want to send invoices too? Type name followed by your business name."

NAME_SET = "Your business name is now *{name}*. Customers will see it on every invoice.\n\n" + (
    "Type invoice to create one, or help for everything you can do."
)
NAME_SET_SUSPENDED = (
    "Your business name is now *{name}*. Your account is suspended, so you can't send invoices "
    "for now. Contact InvoiceIQ support."
)
NAME_CHANGE_PENDING = (
    "Your new business name *{name}* is waiting for approval. Until then your invoices keep "
    "showing *{current}*; we'll let you know when it changes."
)
NAME_SET_PENDING = (
    "Thanks, *{name}*. Your signup is waiting for approval; we'll let you know when you can "
    "send invoices."
)
APPROVED = "Good news: *{name}* is approved. Type invoice to send your first invoice."

VAT_ON = "VAT is on: invoices will show the {percent}% VAT included in the amount."
VAT_OFF = "VAT is off: invoices will not show VAT."

STOPPED = (
    "You won't receive invoices or reminders from this number any more. Receipts for payments "
    "you make still come. Send START to undo."
)
# STOP is kept on the number's address-book entries; with none, there is nothing to keep it on.
NOTHING_TO_STOP = (
    "No business has sent you an invoice through this number, so there is nothing to stop. "
    "If one does, reply STOP to it."
)
STARTED = "You'll receive invoices and reminders again. Send STOP to stop them."

NO_UNPAID = "You have no unpaid invoices. Type invoice to create one."
NO_UNPAID_SUSPENDED = "You have no unpaid invoices."
CUSTOMER_INVOICE = "You have an unpaid invoice from a business on InvoiceIQ:"
CUSTOMER_INVOICES = "You have {count} unpaid invoices from businesses on InvoiceIQ:"
# An unpaid invoice whose payment is under way or being checked: no Pay button to pay twice.
CUSTOMER_PAYMENT_UNDER_WAY = (
    "Invoice {number} ({amount}) from {business}: your payment is being confirmed with M-PESA. "
    "If you entered your PIN, there is no need to pay again: your receipt will come here."
)
CUSTOMER_PAYMENT_CHECKED = (
    "Invoice {number} ({amount}) from {business}: we are checking a payment of it with "
    "M-PESA. If M-PESA sent you a confirmation SMS for it, do not pay again: {business} will "
    "confirm your payment."
)
CUSTOMER_INVOICES_MORE = (
    "You have more than {count} unpaid invoices from businesses on InvoiceIQ. Here are the "
    "{count} newest:"
)

FLOW_EXPIRED = (
    "Your unfinished invoice expired after {duration} without a reply, so nothing was "
    "sent. Type invoice to start again."
)
FLOW_ASK_PHONE = "New invoice. What is the customer's phone number? (like 0712345678)\n" + (
    "Type cancel to stop at any time, back to go back."
)
FLOW_ASK_NAME = "The customer's name? (or skip)"
FLOW_ASK_AMOUNT = "How much, in shillings? (like 1500)"
FLOW_ASK_DESCRIPTION = "What is it for? (3 to 120 characters, like Logo design)"
FLOW_CANCELLED = "Cancelled: no invoice was sent."
FLOW_STALE = (
    "That summary is no longer active, so this tap did nothing. If you tapped Send before, "
    "that invoice may have gone out: type unpaid to see your open invoices. Type invoice to "
    "start a new one."
)
PICK_STALE = (
    "That list is no longer active, so this tap did nothing. If you chose a customer before, "
    "that invoice may have gone out: type unpaid to see your open invoices."
)
FLOW_TAP_SUMMARY = "Tap Send to send it, Edit to change something, or type cancel."
PICK_TAP = "Tap the number of the customer who gets the invoice, or type cancel."
PICK_NO_SUCH = "There is no {number} on the list."
FLOW_PHONE_ONLY = "Type just the phone number here; the amount and what it is for come next."
FLOW_ONE_LINE = "Or, to send it in one line: {text}"
FLOW_OPTED_OUT = (
    "This customer asked not to receive invoices (they sent STOP), so they can't get one. "
    "Type another number, or cancel."
)
FLOW_NOTHING_TO_UNDO = "Nothing to go back to. Type cancel to stop."
FLOW_RESUME = "Back to your new invoice:"
FLOW_ASK_EDIT = (
    "What do you want to change? Type phone, name, amount or description, or the new answer "
    "straight after it, like: amount 1500\nType back to keep everything as it is."
)
FLOW_EDIT_UNKNOWN = "I can change the phone, name, amount or description."
FLOW_SUMMARY = (
    "Please check:\n\nCustomer: {customer}\nAmount: {amount}{vat}\nFor: {description}\n\nSend it?"
)

SEVERAL_MATCHES = (
    "You have more than {count} customers called {name}. Type the phone number instead, like: "
    "invoice 0712345678 {amount} {description}"
)
MATCHES_ALIKE = (
    "You have {count} customers called {name} whose numbers end the same way. Type the phone "
    "number instead, like: invoice 0712345678 {amount} {description}"
)
PICK_CUSTOMER = (
    "You have {count} customers called {name}. Which one gets the invoice for {amount} "
    "({description})?\n\n{choices}\n\nTap a number, or type cancel."
)
NAME_ENDS_UNCLEAR = (
    "You have customers saved as {names}, so I can't tell where the name ends and the amount "
    "starts. Type the phone number instead, like: invoice 0712345678 1500 Logo design"
)
NO_MATCH = (
    "You have no saved customer called {name}. Type their phone number instead, like: "
    "invoice 0712345678 {amount} {description}"
)
NOT_UNDERSTOOD = "Sorry, I can only read text messages. Type help to see what you can do."

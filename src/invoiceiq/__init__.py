"""InvoiceIQ: invoice a customer from WhatsApp and get paid by M-PESA."""

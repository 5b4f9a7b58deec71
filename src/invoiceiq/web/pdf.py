"""The invoice as a PDF (a receipt once paid), made with fpdf2: pure Python, wheels only.

DejaVu Sans is bundled (fonts/, with its licence) and embedded as a subset, so `KSh`, accents
and names in Latin, Greek, Cyrillic, Arabic or Hebrew letters render the same on every machine;
it has no Chinese, Japanese or Korean characters nor colour emoji, which are left blank (the
page shows them). Text is drawn
as text: a name holding markup shows its characters, nothing is interpreted. The customer's
number is masked, as on the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

FONTS = Path(__file__).parent / "fonts"
FAMILY = "DejaVu"
GREEN = (11, 122, 62)
MUTED = (91, 102, 99)
INK = (28, 35, 33)


@dataclass(frozen=True)
class PdfContent:
    business_name: str
    number: str
    date: str
    status_label: str
    customer: str
    description: str
    amount: str
    vat_line: str | None
    paid: bool
    paid_at: str | None
    receipt: str | None
    link: str | None
    paid_after_cancel: bool = False


class _Document(FPDF):
    def footer(self) -> None:
        self.set_y(-15)
        self.set_font(FAMILY, size=8)
        self.set_text_color(*MUTED)
        self.cell(0, 10, "Sent with InvoiceIQ · M-PESA payments", align="C")


def _row(pdf: FPDF, label: str, value: str, *, bold: bool = False) -> None:
    pdf.set_font(FAMILY, size=10)
    pdf.set_text_color(*MUTED)
    pdf.cell(45, 8, label)
    pdf.set_font(FAMILY, "B" if bold else "", 12 if bold else 11)
    pdf.set_text_color(*INK)
    pdf.multi_cell(0, 8, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def build_pdf(content: PdfContent) -> bytes:
    """CPU work (font parsing, compression): call it in a thread from async code."""
    pdf = _Document(format="A4")
    pdf.set_title(f"{'Receipt' if content.paid else 'Invoice'} {content.number}")
    pdf.set_author(content.business_name)
    pdf.set_creator("InvoiceIQ")
    pdf.add_font(FAMILY, "", str(FONTS / "DejaVuSans.ttf"))
    pdf.add_font(FAMILY, "B", str(FONTS / "DejaVuSans-Bold.ttf"))
    pdf.set_margins(20, 20, 20)
    pdf.add_page()

    pdf.set_font(FAMILY, "B", 20)
    pdf.set_text_color(*INK)
    pdf.multi_cell(0, 10, content.business_name, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FAMILY, "B", 14)
    pdf.set_text_color(*GREEN)
    title = "RECEIPT · PAID" if content.paid else "INVOICE"
    if content.status_label == "Cancelled":  # not to be read as a bill still to pay
        title = "INVOICE · CANCELLED"
    pdf.cell(0, 10, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)

    _row(pdf, "Invoice number", content.number)
    _row(pdf, "Date", content.date)
    _row(pdf, "Billed to", content.customer)
    _row(pdf, "For", content.description)
    _row(pdf, "Amount", content.amount, bold=True)
    if content.vat_line:
        _row(pdf, "VAT", content.vat_line)
    _row(pdf, "Status", content.status_label)
    if content.paid:
        _row(pdf, "M-PESA receipt", content.receipt or "confirmed by M-PESA")
        if content.paid_at:
            _row(pdf, "Paid", content.paid_at)
    elif content.paid_after_cancel:
        receipt = content.receipt or "confirmed by M-PESA"
        _row(pdf, "M-PESA receipt", f"{receipt}, received after the invoice was cancelled")
    elif content.link:
        pdf.ln(4)
        pdf.set_font(FAMILY, size=10)
        pdf.set_text_color(*MUTED)
        pdf.multi_cell(
            0, 6, f"Pay with M-PESA at {content.link}", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
    return bytes(pdf.output())

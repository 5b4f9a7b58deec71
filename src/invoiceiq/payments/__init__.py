"""Payments: M-PESA attempts against invoices."""

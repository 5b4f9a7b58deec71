"""Merchants: numbers that create invoices under a business name."""

"""Invoices: what a merchant asks a customer to pay."""

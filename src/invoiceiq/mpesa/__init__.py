"""Safaricom Daraja (M-PESA Express) provider."""

"""360dialog WhatsApp Cloud API provider."""

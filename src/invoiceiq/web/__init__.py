"""The invoice's public page, its PDF and paying from the web (DESIGN §3, §7)."""

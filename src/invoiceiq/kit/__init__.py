"""Small, pure helpers shared by every domain: time, phone numbers, money."""

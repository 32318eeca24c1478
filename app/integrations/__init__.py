"""Clients for the outside services: Africa's Talking (sms.py) and Safaricom Daraja."""

"""M-PESA in the console: payments, requests and raw callbacks (read-only)."""

from __future__ import annotations

from flask_admin import Admin

from admin.auth import SecureModelView
from app.extensions import db
from app.models import MpesaCallback, MpesaRequest, Payment


def register(console: Admin) -> None:
    console.add_view(SecureModelView(Payment, db, name="Payments", category="M-PESA"))
    console.add_view(SecureModelView(MpesaRequest, db, name="Requests", category="M-PESA"))
    console.add_view(SecureModelView(MpesaCallback, db, name="Callbacks", category="M-PESA"))

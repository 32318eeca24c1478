"""Guarantees and collateral: how loans are secured (SPEC "Guarantees"). Callers import
from here; the modules are its parts."""

from __future__ import annotations

from app.services.guarantees.requests import (
    ENDING,
    GuaranteeError,
    guarantee_accept,
    guarantee_decline,
    guarantee_request,
    guarantees_end,
    guarantees_waiting,
    guarantor_find,
    mask_name,
)

__all__ = [
    "ENDING",
    "GuaranteeError",
    "guarantee_accept",
    "guarantee_decline",
    "guarantee_request",
    "guarantees_end",
    "guarantees_waiting",
    "guarantor_find",
    "mask_name",
]

"""Guarantees and collateral: how loans are secured (SPEC "Guarantees"). Callers import
from here; the modules are its parts: asking and answering (requests), the collateral
register (collateral), recovery from guarantors and replacing one (recovery), and the
nightly expiry and default notices (jobs)."""

from __future__ import annotations

from app.services.guarantees.collateral import (
    CollateralError,
    collateral_discharge,
    collateral_record,
)
from app.services.guarantees.jobs import (
    GUARANTEE_EXPIRY,
    GUARANTOR_NOTICES,
    guarantee_expiry_job,
    guarantor_notices_job,
)
from app.services.guarantees.recovery import (
    GuaranteeRecoveryError,
    guarantee_recovery_decide,
    guarantee_recovery_propose,
    guarantee_substitute_accept,
    guarantee_substitute_approve,
    guarantee_substitute_decline,
    guarantee_substitute_request,
    open_guarantee_recovery,
)
from app.services.guarantees.requests import (
    ASKING_STATUSES,
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
    "ASKING_STATUSES",
    "ENDING",
    "GUARANTEE_EXPIRY",
    "GUARANTOR_NOTICES",
    "CollateralError",
    "GuaranteeError",
    "GuaranteeRecoveryError",
    "collateral_discharge",
    "collateral_record",
    "guarantee_accept",
    "guarantee_decline",
    "guarantee_expiry_job",
    "guarantee_recovery_decide",
    "guarantee_recovery_propose",
    "guarantee_request",
    "guarantee_substitute_accept",
    "guarantee_substitute_approve",
    "guarantee_substitute_decline",
    "guarantee_substitute_request",
    "guarantees_end",
    "guarantees_waiting",
    "guarantor_find",
    "guarantor_notices_job",
    "mask_name",
    "open_guarantee_recovery",
]

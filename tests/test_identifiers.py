"""MAC addresses, serial numbers and versions as admins and phones write them."""

from __future__ import annotations

import pytest

from appliance.identifiers import (
    InvalidIdentifier,
    is_version,
    normalise_mac,
    normalise_serial,
    same_version,
    version_tuple,
)

NORMAL_MAC = "00-04-F2-A1-B2-C3"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0004F2A1B2C3", id="bare"),
        pytest.param("00-04-F2-A1-B2-C3", id="dashes"),
        pytest.param("00:04:F2:A1:B2:C3", id="colons"),
        pytest.param("0004f2a1b2c3", id="bare-lower"),
        pytest.param("00-04-f2-a1-b2-c3", id="dashes-lower"),
        pytest.param("00:04:f2:a1:b2:c3", id="colons-lower"),
        pytest.param("00:04:F2:a1:B2:c3", id="mixed-case"),
        pytest.param("  00-04-F2-A1-B2-C3 \n", id="surrounding-space"),
    ],
)
def test_mac_forms_normalise_to_upper_case_with_dashes(text: str) -> None:
    assert normalise_mac(text) == NORMAL_MAC


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("00-04:F2-A1-B2-C3", id="mixed-separators"),
        pytest.param("0004F2-A1B2C3", id="separator-in-one-place"),
        pytest.param("00-04-F2-A1-B2", id="five-pairs"),
        pytest.param("00-04-F2-A1-B2-C3-D4", id="seven-pairs"),
        pytest.param("0004F2A1B2", id="five-pairs-bare"),
        pytest.param("00-04-F2-A1-B2-CG", id="non-hex"),
        pytest.param("00-04-F2-A1-B2-C3-", id="trailing-separator"),
        pytest.param("0-04-F2-A1-B2-C3", id="short-pair"),
        pytest.param("00.04.F2.A1.B2.C3", id="dots"),
        pytest.param("0004.F2A1.B2C3", id="cisco-dots"),
        pytest.param("00 04 F2 A1 B2 C3", id="spaces"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
    ],
)
def test_malformed_mac_is_rejected_naming_the_expected_form(text: str) -> None:
    with pytest.raises(InvalidIdentifier) as excinfo:
        normalise_mac(text)
    message = str(excinfo.value)
    assert repr(text) in message
    assert "six two-hex-digit pairs" in message
    assert "00-04-F2-A1-B2-C3" in message


def test_invalid_identifier_is_a_value_error() -> None:
    # Callers that catch ValueError (argument parsing) also catch these.
    with pytest.raises(ValueError):
        normalise_mac("nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("64167F1234", "64167F1234", id="digits-and-letters"),
        pytest.param("ab12cd", "AB12CD", id="lower-case-upper-cased"),
        pytest.param("SN-0001_a", "SN-0001_A", id="dash-and-underscore"),
        pytest.param("  X1 ", "X1", id="surrounding-space"),
        pytest.param("A" * 64, "A" * 64, id="64-chars"),
        pytest.param("7", "7", id="one-char"),
    ],
)
def test_serial_numbers_normalise_to_upper_case(text: str, expected: str) -> None:
    assert normalise_serial(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("  ", id="blank"),
        pytest.param("A" * 65, id="65-chars"),
        pytest.param("AB 12", id="inner-space"),
        pytest.param("AB.12", id="dot"),
        pytest.param("AB/12", id="slash"),
        pytest.param("ÄB12", id="non-ascii-letter"),
    ],
)
def test_malformed_serial_is_rejected_naming_the_expected_form(text: str) -> None:
    with pytest.raises(InvalidIdentifier, match="letters, digits, '-' or '_'") as excinfo:
        normalise_serial(text)
    assert "serial number" in str(excinfo.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("4.0.7577.4387", (4, 0, 7577, 4387), id="cu8"),
        pytest.param("4.0.07577.4387", (4, 0, 7577, 4387), id="leading-zero"),
        pytest.param("1", (1,), id="single-number"),
        pytest.param("1.0.522.101", (1, 0, 522, 101), id="ocs-2007"),
        pytest.param("1.2.3.4.5.6", (1, 2, 3, 4, 5, 6), id="six-parts"),
    ],
)
def test_version_tuple_reads_dotted_numbers(text: str, expected: tuple[int, ...]) -> None:
    assert is_version(text)
    assert version_tuple(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("4.0.x.1", id="letter"),
        pytest.param("4..0", id="empty-part"),
        pytest.param(".4.0", id="leading-dot"),
        pytest.param("4.0.", id="trailing-dot"),
        pytest.param("1.2.3.4.5.6.7", id="seven-parts"),
        pytest.param("1234567890.1", id="ten-digit-part"),
        pytest.param("-1.0", id="negative"),
        pytest.param("4.0 .1", id="inner-space"),
        pytest.param("4.0.7577.4387\n", id="trailing-newline"),
        pytest.param("\uff14.0.7577.4387", id="fullwidth-digit"),
        pytest.param("\u0664.0", id="arabic-indic-digit"),
    ],
)
def test_malformed_version_is_rejected(text: str) -> None:
    assert not is_version(text)
    with pytest.raises(InvalidIdentifier, match="dotted numbers like 4.0.7577.4387"):
        version_tuple(text)


def test_versions_order_numerically_not_as_text() -> None:
    versions = ["4.0.7577.4387", "4.0.7577.400", "3.5.6907.83", "4.0.7577.4100", "1.0.522.101"]
    assert sorted(versions, key=version_tuple) == [
        "1.0.522.101",
        "3.5.6907.83",
        "4.0.7577.400",
        "4.0.7577.4100",
        "4.0.7577.4387",
    ]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param("4.0.7577.4387", "4.0.7577.4387", True, id="identical"),
        pytest.param("4.0.07577.4387", "4.0.7577.4387", True, id="leading-zero"),
        pytest.param(" 4.0.7577.4387 ", "4.0.7577.4387", True, id="surrounding-space"),
        pytest.param("4.0.7577.4387", "4.0.7577.4386", False, id="different-build"),
        pytest.param("Beta", "beta", True, id="non-numeric-ignores-case"),
        pytest.param("Beta", "Gamma", False, id="non-numeric-different"),
        pytest.param(None, None, True, id="both-none"),
        pytest.param(None, "4.0.7577.4387", False, id="none-and-version"),
        pytest.param("4.0.7577.4387", None, False, id="version-and-none"),
    ],
)
def test_same_version(a: str | None, b: str | None, same: bool) -> None:
    assert same_version(a, b) is same

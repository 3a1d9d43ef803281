"""The update check's single expat pass (phones/codec.py `parse_check`) against the
parser it replaced: defusedxml's ElementTree and a walk of the whole tree, kept here
as it was. Over the seed corpus, hand-made awkward documents and hypothesis-generated
ones, both give the same DeviceRequest, or refuse with the same status and reason."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

import defusedxml.ElementTree as SafeET
import pytest
from defusedxml import DefusedXmlException
from hypothesis import given
from hypothesis import strategies as st

from appliance.identifiers import InvalidIdentifier, normalise_mac, normalise_serial
from appliance.model import DeviceRequest, ReportedModule, Zone
from appliance.phones.codec import CheckError, parse_check
from tests.fuzz import targets
from tests.fuzz.strategies import budget, inputs

# -- the former parser, as it was -------------------------------------------------------------

_FIELDS: dict[str, tuple[str, ...]] = {
    "device_type": ("devicetype",),
    "mac": ("macaddress", "mac"),
    "serial": ("serialnumber", "serial"),
    "brand": ("vendor", "brand", "manufacturer"),
    "model": ("model",),
    "revision": ("revision", "hardwarerevision"),
    "locale": ("locale",),
    "user_id": ("userid", "user"),
    "version": ("version", "firmwareversion"),
}
_MODULE_FIELDS: dict[str, tuple[str, ...]] = {
    "file_name": ("filename", "name"),
    "version": ("version",),
    "timestamp": ("timestamp",),
}
_KNOWN = frozenset(n for names in _FIELDS.values() for n in names)
_KNOWN_MODULE = frozenset(n for names in _MODULE_FIELDS.values() for n in names)
_MAX_FIELD = 256
_MAX_MODULES = 64


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _text(elem: ET.Element) -> str | None:
    value = (elem.text or "").strip()
    if not value:
        return None
    if len(value) > _MAX_FIELD or not value.isprintable():
        raise CheckError(400, f"field <{_local(elem.tag)}> is too long or not printable")
    return value


def _module_text(name: str, elem: ET.Element) -> str | None:
    if name in _MODULE_FIELDS["timestamp"]:
        return "".join(elem.itertext()).strip() or None
    return _text(elem)


def _first(found: dict[str, str], names: Sequence[str]) -> str | None:
    return next((found[n] for n in names if n in found), None)


def _maybe(normalise: object, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalise(value)  # type: ignore[operator, no-any-return]
    except InvalidIdentifier:
        return None


def former_parse_check(
    body: bytes, zone: Zone = Zone.INTERNAL, address: str | None = None
) -> DeviceRequest:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise CheckError(400, "DTDs and entities are not allowed") from None
    except (ET.ParseError, LookupError, ValueError) as e:
        raise CheckError(400, f"malformed XML ({e})") from None
    found: dict[str, str] = {}
    modules: list[ReportedModule] = []
    in_modules: set[int] = set()
    for elem in root.iter():
        name = _local(elem.tag)
        if name == "module":
            if len(modules) >= _MAX_MODULES:
                raise CheckError(400, f"more than {_MAX_MODULES} modules")
            if id(elem) not in in_modules:
                in_modules.update(id(d) for d in elem.iter())
            fields = {
                n: t
                for c in elem
                if (n := _local(c.tag)) in _KNOWN_MODULE and (t := _module_text(n, c)) is not None
            }
            file_name = _first(fields, _MODULE_FIELDS["file_name"])
            if file_name:
                modules.append(
                    ReportedModule(
                        file_name,
                        _first(fields, _MODULE_FIELDS["version"]),
                        _first(fields, _MODULE_FIELDS["timestamp"]),
                    )
                )
        elif name in _KNOWN and name not in found and len(elem) == 0 and id(elem) not in in_modules:
            value = _text(elem)
            if value is not None:
                found[name] = value
    get = {key: _first(found, names) for key, names in _FIELDS.items()}
    missing = [k for k in ("brand", "model") if not get[k]]
    if missing:
        raise CheckError(400, f"the check names no {' and no '.join(missing)}")
    return DeviceRequest(
        device_type=get["device_type"] or "UCPhone",
        brand=get["brand"] or "",
        model=get["model"] or "",
        revision=get["revision"] or "",
        locale=get["locale"] or "",
        mac=_maybe(normalise_mac, get["mac"]),
        serial=_maybe(normalise_serial, get["serial"]),
        modules=tuple(modules),
        version=get["version"],
        user_id=get["user_id"],
        zone=zone,
        address=address,
    )


# -- the comparison ---------------------------------------------------------------------------


def outcome(parse: object, body: bytes) -> DeviceRequest | tuple[int, str]:
    try:
        return parse(body, Zone.EXTERNAL, "192.0.2.7")  # type: ignore[operator, no-any-return]
    except CheckError as e:
        return (e.status, e.reason)


def assert_same(body: bytes) -> None:
    assert outcome(parse_check, body) == outcome(former_parse_check, body), body


AWKWARD = [
    # comments, processing instructions, CDATA and references inside and between fields
    b"<R><Vendor>Poly<!-- c -->com</Vendor><Model><![CDATA[CX]]>6<?pi x?>00</Model></R>",
    b"<R><Vendor>A&amp;B &#x41;&#66;</Vendor><Model>&lt;M&gt;&quot;&apos;</Model></R>",
    b"<R><Vendor>x</Vendor><Model>y</Model><Locale>&#x0;</Locale></R>",
    b"<R><Vendor>x</Vendor><Model>y</Model><Locale>&undefined;</Locale></R>",
    b"<R><Vendor>x</Vendor><Model>y</Model><Locale>&#xD800;</Locale></R>",
    # a field with a child is no field; its tail is nobody's text
    b"<R><Vendor>a<b/>c</Vendor><Vendor>d</Vendor><Model>m<x>n</x></Model><Model>o</Model></R>",
    b"<R><Vendor>v</Vendor><Model></Model><Model>  </Model><Model>m</Model></R>",
    b"<Vendor>rootvendor</Vendor>",
    b"<Model>m<Vendor>v</Vendor></Model>",
    # modules: nested, inside timestamps, fields with children, repeated fields
    b"<R><Vendor>v</Vendor><Model>m</Model><Module><FileName>a<x/>b</FileName>"
    b"<Name>n</Name><Version>1</Version><Version>2</Version></Module></R>",
    b"<R><Vendor>v</Vendor><Model>m</Model><Module><Timestamp>t1<x>t2<Module><FileName>in"
    b"</FileName><Timestamp>deep</Timestamp></Module></x>t3</Timestamp><FileName>out</FileName>"
    b"</Module>tail</R>",
    b"<R><Vendor>v</Vendor><Model>m</Model><Module><Module><FileName>inner</FileName></Module>"
    b"<FileName>outer</FileName><Vendor>no</Vendor></Module><Version>top</Version></R>",
    b"<Module><FileName>f</FileName><Vendor>v</Vendor><Model>m</Model></Module>",
    b"<R><Vendor>v</Vendor><Model>m</Model><Module><x><FileName>deep</FileName></x></Module></R>",
    b"<R><Vendor>v</Vendor><Model>m</Model><Module><FileName>" + b"F" * 300 + b"</FileName>"
    b"<FileName>ok</FileName></Module></R>",
    b"<R><Vendor>" + b"V" * 300 + b"</Vendor><Vendor>v</Vendor><Model>m</Model></R>",
    b"<R><Vendor>v</Vendor><Vendor>" + b"V" * 300 + b"</Vendor><Model>m</Model></R>",
    b"<R><Vendor>v</Vendor><Model>m</Model>"
    + b"<Module><FileName>f</FileName></Module>" * 64
    + b"<Module/><Module><FileName>g</FileName></Module></R>",
    b"<R><Vendor>v</Vendor><Model>m</Model>"
    + b"<Module><FileName>f</FileName></Module>" * 64
    + b"<Module><FileName>"
    + b"F" * 300
    + b"</FileName></Module></R>",
    b"<R><Model>"
    + b"M" * 300
    + b"</Model>"
    + b"<Module><FileName>f</FileName></Module>" * 65
    + b"</R>",
    # namespaces: bound, unbound, odd URIs, attributes
    b'<a:R xmlns:a="u}v"><a:Vendor>v</a:Vendor><Model xmlns="x">m</Model></a:R>',
    b"<a:R><Vendor>v</Vendor><Model>m</Model></a:R>",
    b'<R a="1" b:c="2"><Vendor>v</Vendor><Model>m</Model></R>',
    b'<R xmlns:b="y" b:c="2" b:c="3"><Vendor>v</Vendor><Model>m</Model></R>',
    # encodings, byte order marks, NUL, declarations
    '<?xml version="1.0" encoding="iso-8859-1"?><R><Vendor>Pé</Vendor><Model>m</Model></R>'.encode(
        "latin-1"
    ),
    "<R><Vendor>Polycom</Vendor><Model>CX600</Model></R>".encode("utf-16"),
    b"\xef\xbb\xbf<R><Vendor>v</Vendor><Model>m</Model></R>",
    b'<?xml version="1.0" encoding="utf-16"?><R><Vendor>v</Vendor><Model>m</Model></R>',
    b'<?xml version="1.0" encoding="shift_jis"?><R><Vendor>v</Vendor><Model>m</Model></R>',
    b'<?xml version="1.0" encoding="cp500"?><R><Vendor>v</Vendor><Model>m</Model></R>',
    b"<R><Vendor>v\x00</Vendor><Model>m</Model></R>",
    b"<R><Vendor>v</Vendor><Model>m</Model></R><R/>",
    b"  <R><Vendor>v</Vendor><Model>m</Model></R>  ",
    b'<R><Vendor>v</Vendor><Model>m</Model></R><?xml version="1.0"?>',
    # DTDs, entities, external references, parameter entities
    b"<!DOCTYPE R><R><Vendor>v</Vendor><Model>m</Model></R>",
    b'<!DOCTYPE R [<!ENTITY e "x">]><R><Vendor>&e;</Vendor><Model>m</Model></R>',
    b'<!DOCTYPE R [<!ENTITY % p "x"> %p;]><R/>',
    b'<!DOCTYPE R [<!ENTITY e SYSTEM "file:///etc/passwd">]><R>&e;</R>',
    b'<!DOCTYPE R [<!ENTITY e SYSTEM "x" NDATA n>]><R/>',
    b'<!DOCTYPE R PUBLIC "-//x//y" "http://192.0.2.1/x.dtd"><R/>',
    b"<R><Vendor>v</Vendor><Model>m</Model></R><!DOCTYPE R>",
    b"<R><!DOCTYPE R><Vendor>v</Vendor></R>",
    b"<R",
    b"",
    b"<R><Vendor>v</Vendor><Model>m</Model>",
    b"<R><Vendor>v</Vendor><Model>m</Model></r>",
]


@pytest.mark.parametrize("body", AWKWARD)
def test_awkward_documents_are_read_as_before(body: bytes) -> None:
    assert_same(body)


def test_the_seed_corpus_is_read_as_before() -> None:
    from tests.test_bad_input import XML_CASES
    from tests.test_upx import CANONICAL, LENIENT, REFUSALS

    corpus = [*targets.check_seeds(), CANONICAL, *XML_CASES.values()]
    corpus += [p.values[0] for p in (*LENIENT, *REFUSALS)]
    for body in corpus:
        assert isinstance(body, bytes)
        assert_same(body)


@budget(200)
@given(inputs("check"))
def test_mutated_checks_are_read_as_before(body: bytes) -> None:
    assert_same(body)


_NAMES = sorted({*(n for names in _FIELDS.values() for n in names), *_KNOWN_MODULE, "modules", "x"})
_NAME = st.one_of(
    st.sampled_from(["Module", "module", "FileName", "Timestamp", "Version", "Vendor", "Model"]),
    st.sampled_from(_NAMES),
    st.sampled_from(_NAMES).map(str.upper),
    st.sampled_from(_NAMES).map(lambda n: f"p:{n}"),
)
_TEXT = st.one_of(
    st.sampled_from(["", " ", "Polycom", "CX600", "00-04-F2-A1-B2-C3", "4.0.1", "T" * 257]),
    st.sampled_from(["&amp;", "&#x7f;", "&#10;", "<!--c-->", "<![CDATA[c]]>", "<?p?>", "&bad;"]),
    st.text(alphabet="ab \t\n\u00e9\u200b", max_size=6),
)
_LEAF = st.tuples(_NAME, _TEXT, st.just(()))
_TREE = st.recursive(
    _LEAF,
    lambda children: st.tuples(_NAME, _TEXT, st.lists(st.tuples(children, _TEXT), max_size=3)),
    max_leaves=16,
)


def _render(tree: tuple[str, str, tuple[tuple[object, str], ...]]) -> str:
    name, text, children = tree
    inner = "".join(_render(child) + tail for child, tail in children)  # type: ignore[arg-type]
    return f"<{name}>{text}{inner}</{name}>"


@budget(150)
@given(st.lists(_TREE, max_size=5), st.sampled_from(["Request", "r", "Module", "Vendor"]))
def test_generated_documents_are_read_as_before(
    children: list[tuple[str, str, tuple[tuple[object, str], ...]]], root: str
) -> None:
    inner = "".join(_render(c) for c in children)
    assert_same(f'<{root} xmlns:p="urn:p">{inner}</{root}>'.encode())


_MODULE_NAME = st.sampled_from(["Module", "FileName", "name", "Timestamp", "VERSION", "x"])
_WORD = st.sampled_from(["", "a", " b ", "c<!--x-->d", "&#x85;", "T" * 257])
_MODULE_TREE = st.recursive(
    st.tuples(_MODULE_NAME, _WORD, st.just(())),
    lambda children: st.tuples(
        _MODULE_NAME, _WORD, st.lists(st.tuples(children, _WORD), max_size=3)
    ),
    max_leaves=12,
)


@budget(150)
@given(st.lists(st.lists(st.tuples(_MODULE_TREE, _WORD), max_size=4), max_size=3))
def test_generated_module_lists_are_read_as_before(
    modules: list[list[tuple[tuple[str, str, tuple[tuple[object, str], ...]], str]]],
) -> None:
    inner = "".join(_render(("Module", "", tuple(children))) for children in modules)
    assert_same(f"<Request><Vendor>v</Vendor><Model>m</Model>{inner}</Request>".encode())

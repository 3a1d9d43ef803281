"""The one typed, frozen configuration, read once from TOML; every key is checked.

An unknown key, a value of the wrong type, a bad address or a missing file is a
ConfigError whose one line names the key and the file; the command line turns it into
exit status 78 (EX_CONFIG). With no file, the embedded defaults apply.
"""

from appliance.config.loader import Config, load_config
from appliance.config.store import StoreBackend, StoreSettings
from appliance.config.tables import (
    AdminLdapSettings,
    AdminSettings,
    AuthBackend,
    AuthSettings,
    CertSignature,
    CheckSettings,
    DeviceLogSettings,
    DhcpSettings,
    DiscoveryName,
    DnsSettings,
    ImportSettings,
    LdapSettings,
    Listeners,
    MetricsSettings,
    NtlmBackend,
    RolloutSettings,
    ServiceSettings,
    SyslogSettings,
    TlsProfile,
    TlsSettings,
    UrlScheme,
    ZoneSettings,
)
from appliance.config.values import Address, ConfigError, Network

__all__ = [
    "Address",
    "AdminLdapSettings",
    "AdminSettings",
    "AuthBackend",
    "AuthSettings",
    "CertSignature",
    "CheckSettings",
    "Config",
    "ConfigError",
    "DeviceLogSettings",
    "DhcpSettings",
    "DiscoveryName",
    "DnsSettings",
    "ImportSettings",
    "LdapSettings",
    "Listeners",
    "MetricsSettings",
    "NtlmBackend",
    "Network",
    "RolloutSettings",
    "StoreBackend",
    "StoreSettings",
    "ServiceSettings",
    "SyslogSettings",
    "TlsProfile",
    "TlsSettings",
    "UrlScheme",
    "ZoneSettings",
    "load_config",
]

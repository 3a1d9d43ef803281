"""The phones' HTTP service: update checks, image downloads, log uploads, external auth."""

from appliance.phones.auth import Authenticator, LdapDirectory, LocalDirectory
from appliance.phones.codec import BaseUrls
from appliance.phones.resource import PhoneResource, PhoneService, clean_device_logs

__all__ = [
    "Authenticator",
    "BaseUrls",
    "LdapDirectory",
    "LocalDirectory",
    "PhoneResource",
    "PhoneService",
    "clean_device_logs",
]

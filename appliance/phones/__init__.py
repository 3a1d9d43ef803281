"""The phones' HTTP service: update checks, image downloads, log uploads, external auth."""

from appliance.phones.auth import Authenticator, ThreadPoolRunner
from appliance.phones.codec import BaseUrls
from appliance.phones.directories import Directory, LdapDirectory, LocalDirectory
from appliance.phones.records import clean_device_logs
from appliance.phones.resource import PhoneResource, PhoneService

__all__ = [
    "Authenticator",
    "BaseUrls",
    "Directory",
    "LdapDirectory",
    "LocalDirectory",
    "PhoneResource",
    "PhoneService",
    "ThreadPoolRunner",
    "clean_device_logs",
]

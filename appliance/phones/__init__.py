"""The phones' HTTP service: update checks, image downloads, log uploads, external auth."""

from appliance.phones.auth import Authenticator, ThreadPoolRunner
from appliance.phones.codec import BaseUrls
from appliance.phones.directories import (
    Directory,
    LocalDirectory,
    NtlmVerifier,
    ntlm_verifier,
)
from appliance.phones.lockouts import SharedLockouts
from appliance.phones.ntlm import NtlmResponse
from appliance.phones.offload import StoreThreads
from appliance.phones.records import clean_device_logs
from appliance.phones.resource import PhoneRoutes, PhoneService
from appliance.phones.spooled import SHIP_SECONDS, BranchWriter, branch_writer
from appliance.phones.verification import FileCheckService
from appliance.phones.watcher import CatalogueWatcher
from appliance.phones.winbind import WinbindVerifier

__all__ = [
    "SHIP_SECONDS",
    "Authenticator",
    "BaseUrls",
    "BranchWriter",
    "CatalogueWatcher",
    "Directory",
    "FileCheckService",
    "LocalDirectory",
    "NtlmResponse",
    "NtlmVerifier",
    "PhoneRoutes",
    "PhoneService",
    "SharedLockouts",
    "StoreThreads",
    "ThreadPoolRunner",
    "WinbindVerifier",
    "branch_writer",
    "clean_device_logs",
    "ntlm_verifier",
]

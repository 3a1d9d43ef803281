"""The Control Panel's settings: the config file's `[admin]` table (config.AdminSettings)."""

from ..config import AdminSettings as AdminSettings

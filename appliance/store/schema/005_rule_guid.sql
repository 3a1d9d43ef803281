-- ucupdates schema, version 5: the GUID a package's updateInfo.xml pre-assigns to a rule
-- (docs/protocol.md §8). NULL when no package named one. Kept as the package spelled it.
ALTER TABLE rules ADD COLUMN guid TEXT;

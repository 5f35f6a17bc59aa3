-- Erasure (DESIGN.md, "Data lifecycle"): when a member's personal data was erased. A later
-- mandates.created then fills personal fields only from what it carries itself, never from
-- the gateway's API.
ALTER TABLE members ADD COLUMN erased_at TIMESTAMPTZ;

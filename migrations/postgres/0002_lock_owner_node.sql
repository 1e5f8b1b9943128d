-- Lock owners carry their node and its generation (the start of its process), so a node that
-- restarts takes over the locks its previous process held at once, and the owner grows past
-- 64 characters.
ALTER TABLE hfs_upload_sessions
    ALTER COLUMN lock_owner TYPE VARCHAR(255),
    ADD COLUMN lock_node VARCHAR(255),
    ADD COLUMN lock_gen BIGINT NOT NULL DEFAULT 0;

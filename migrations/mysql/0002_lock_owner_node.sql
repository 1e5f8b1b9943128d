-- Lock owners carry their node and its generation (the start of its process), so a node that
-- restarts takes over the locks its previous process held at once, and the owner grows past
-- 64 characters.
ALTER TABLE hfs_upload_sessions
    MODIFY lock_owner VARCHAR(255) NULL,
    ADD COLUMN lock_node VARCHAR(255) NULL,
    ADD COLUMN lock_gen BIGINT NOT NULL DEFAULT 0;

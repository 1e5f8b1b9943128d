-- Sessions of resumable (tus) uploads. `active_key` is the SHA-256 (hex) of the path while
-- the upload is unfinished, NULL once it is complete or expired: its unique index is what
-- keeps two nodes from starting two uploads to one path.
CREATE TABLE IF NOT EXISTS hfs_upload_sessions (
    id            VARCHAR(64) NOT NULL PRIMARY KEY,
    path          TEXT        NOT NULL,
    length        BIGINT      NOT NULL,
    upload_offset BIGINT      NOT NULL,
    content_type  TEXT        NOT NULL,
    metadata      TEXT        NOT NULL,
    expires       BIGINT      NOT NULL,
    active_key    CHAR(64)    NULL UNIQUE,
    lock_owner    VARCHAR(64) NULL,
    lock_until    BIGINT      NOT NULL DEFAULT 0,
    KEY hfs_upload_sessions_expires (expires)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- weim schema for MySQL 8 and MariaDB 10.11 (InnoDB, utf8mb4).
--
-- weim applies this file itself each time it connects (src/store/mysql/),
-- so every statement must be idempotent (CREATE TABLE IF NOT EXISTS,
-- INSERT IGNORE). It can also be applied by hand:
--     mysql --default-character-set=utf8mb4 weim < database.sql
-- The file is split into statements on ";" at the end of a line: keep one
-- ";" per statement, at a line end, and no ";" ending a comment line.
-- Stay within the syntax both servers accept: utf8mb4_unicode_ci (not
-- utf8mb4_0900_*), no SRID columns, no JSON "->>", no "INSERT ... AS new".
-- The SQLite schemas in src/store/sqlite/ mirror this file.
-- A change to an existing table needs a migration and a new schema_version.

CREATE TABLE IF NOT EXISTS schema_version (
    id      TINYINT UNSIGNED NOT NULL,
    version INT NOT NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

INSERT IGNORE INTO schema_version (id, version) VALUES (1, 1);

-- Accounts. status 0 is a normal account; any other value disables it
-- (its tokens are refused at sign-in and by every REST call). Usernames are unique case-insensitively but otherwise exactly:
-- username_key holds the lowercase of the username (computed by weim) in a
-- byte-compared VARBINARY column, so neither the accent folding nor the
-- trailing-space padding of utf8mb4_unicode_ci applies and SQLite behaves
-- the same. 768 bytes = 64 characters whose lowercase may grow to 3
-- characters of 4 bytes each.
-- realname holds a masked real name; the ID card number itself is never
-- stored, only a masked form and a hash.
-- weim adds two indexes to this table when they are missing (MySQL 8 has no
-- CREATE INDEX IF NOT EXISTS; see src/store/mysql/profile.rs):
-- idx_users_location (latitude, longitude) and the unique
-- uk_users_id_card_hash (id_card_hash).
CREATE TABLE IF NOT EXISTS users (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    username          VARCHAR(64)  NOT NULL,
    username_key      VARBINARY(768) NOT NULL,
    password_hash     VARCHAR(255) NOT NULL,
    nickname          VARCHAR(64)  NOT NULL,
    avatar            VARCHAR(512) NOT NULL DEFAULT '',
    sex               INT          NOT NULL DEFAULT 0,
    status            INT          NOT NULL DEFAULT 0,
    realname_verified TINYINT(1)   NOT NULL DEFAULT 0,
    realname          VARCHAR(64)  NULL,
    id_card_mask      VARCHAR(32)  NULL,
    id_card_hash      VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NULL,
    longitude         DOUBLE       NULL,
    latitude          DOUBLE       NULL,
    location_at       BIGINT       NULL,
    created_at        BIGINT       NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_users_username_key (username_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Sessions ended by logout, kept until their absolute end (ends_at, unix
-- seconds), after which no token of theirs is valid anyway. sid is the
-- session id of the tokens (16 hex digits), compared byte by byte.
CREATE TABLE IF NOT EXISTS revoked_sessions (
    sid     VARBINARY(128) NOT NULL,
    ends_at BIGINT NOT NULL,
    PRIMARY KEY (sid),
    KEY idx_revoked_sessions_ends_at (ends_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Bans set through the server API (users/ban): the user's tokens, sign-in
-- and login are refused until `until` (unix seconds; 0 = for ever).
CREATE TABLE IF NOT EXISTS user_bans (
    user_id    BIGINT UNSIGNED NOT NULL,
    until      BIGINT NOT NULL,
    reason     VARCHAR(255) NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ---------------------------------------------------------------------------
-- Social: friends (one row per direction) and groups. `chat_groups` because
-- `groups` is a reserved word in MySQL 8. name_key is the lowercase group
-- name (computed by weim), unique byte by byte like username_key.

CREATE TABLE IF NOT EXISTS friends (
    user_id    BIGINT UNSIGNED NOT NULL,
    friend_id  BIGINT UNSIGNED NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id),
    KEY idx_friends_friend (friend_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS chat_groups (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    owner_id   BIGINT UNSIGNED NOT NULL,
    name       VARCHAR(64) NOT NULL,
    name_key   VARBINARY(768) NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_chat_groups_name_key (name_key),
    KEY idx_chat_groups_owner (owner_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS group_members (
    group_id  BIGINT UNSIGNED NOT NULL,
    user_id   BIGINT UNSIGNED NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id),
    KEY idx_group_members_user (user_id, group_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Friend and join requests: status 0 pending, 1 accepted, -1 rejected.
-- pending is generated: 1 while status is 0, NULL once handled, so the
-- unique key allows one pending request per pair and keeps every handled
-- one (NULLs never collide in a unique key).
CREATE TABLE IF NOT EXISTS friend_requests (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    from_id    BIGINT UNSIGNED NOT NULL,
    to_id      BIGINT UNSIGNED NOT NULL,
    channel    VARCHAR(32)  NOT NULL DEFAULT '',
    reason     VARCHAR(255) NOT NULL DEFAULT '',
    status     TINYINT NOT NULL DEFAULT 0,
    pending    TINYINT GENERATED ALWAYS AS (CASE WHEN status = 0 THEN 1 END) STORED,
    created_at BIGINT NOT NULL,
    handled_at BIGINT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_friend_requests_pending (from_id, to_id, pending),
    KEY idx_friend_requests_to (to_id, id),
    CONSTRAINT ck_friend_requests_status CHECK (status IN (-1, 0, 1))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS group_join_requests (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    group_id   BIGINT UNSIGNED NOT NULL,
    user_id    BIGINT UNSIGNED NOT NULL,
    status     TINYINT NOT NULL DEFAULT 0,
    pending    TINYINT GENERATED ALWAYS AS (CASE WHEN status = 0 THEN 1 END) STORED,
    created_at BIGINT NOT NULL,
    handled_at BIGINT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_group_join_requests_pending (group_id, user_id, pending),
    KEY idx_group_join_requests_user (user_id),
    CONSTRAINT ck_group_join_requests_status CHECK (status IN (-1, 0, 1))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ---------------------------------------------------------------------------
-- Messages. ope 0 = friend (to_id is a user), 1 = group (to_id is a group);
-- status -1 = withdrawn (body emptied). created_at is unix milliseconds.
-- cid is the sender's client message id: unique per sender, so a retried
-- send stores nothing twice (NULLs do not collide).

CREATE TABLE IF NOT EXISTS messages (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    from_id    BIGINT UNSIGNED NOT NULL,
    to_id      BIGINT UNSIGNED NOT NULL,
    ope        TINYINT NOT NULL,
    kind       INT NOT NULL,
    body       MEDIUMTEXT NOT NULL,
    status     TINYINT NOT NULL DEFAULT 0,
    cid        VARBINARY(64) NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (id),
    KEY idx_messages_to (ope, to_id, id),
    KEY idx_messages_from (ope, from_id, to_id, id),
    UNIQUE KEY uk_messages_cid (from_id, cid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Every message insert locks this row first, so message ids become visible
-- in id order (the delivery cursor below relies on it).
CREATE TABLE IF NOT EXISTS message_seq (
    id TINYINT UNSIGNED NOT NULL,
    n  BIGINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB;

INSERT IGNORE INTO message_seq (id, n) VALUES (1, 0);

-- The highest message id delivered to each user: anything to them above it
-- is pending and pushed when they next sign in.
CREATE TABLE IF NOT EXISTS delivery_cursors (
    user_id BIGINT UNSIGNED NOT NULL,
    upto    BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (user_id)
) ENGINE=InnoDB;

-- ---------------------------------------------------------------------------
-- Imports from another server (`weim migrate`): one row per source (e.g.
-- "weim-go db.example:3306/ppIm"), written when the first run begins, so
-- that running the import again is told apart from a database holding
-- other data. Times are unix seconds.
CREATE TABLE IF NOT EXISTS imports (
    source      VARBINARY(255) NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT NULL,
    PRIMARY KEY (source)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Minimal schema for the benchmark's reference servers (bench/reference/*).
-- Deliberately independent of the project's schema.sql, but with the same
-- table and column names as the project: users, rooms, messages. Like the project's, messages
-- has no foreign keys: with them every INSERT takes a KEY SHARE lock on the room's and the
-- user's row, and concurrent inserts into one room then go through MultiXacts, which made
-- the references stall for seconds under load.
CREATE TABLE IF NOT EXISTS users (
    id         integer PRIMARY KEY,
    username   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS rooms (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS messages (
    id        bigserial PRIMARY KEY,
    from_user integer NOT NULL,
    to_user   integer,
    room      text,
    content   text NOT NULL,
    timestamp timestamptz NOT NULL DEFAULT now()
);

-- room history: latest N of a room, and paging with id < before
CREATE INDEX IF NOT EXISTS messages_room_id_idx ON messages (room, id) WHERE room IS NOT NULL;

-- Minimal schema for the benchmark's reference servers (bench/reference/*).
-- Deliberately independent of the project's schema.sql, but with the same
-- table and column names as the project: users, rooms, messages.
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
    from_user integer NOT NULL REFERENCES users(id),
    to_user   integer REFERENCES users(id),
    room      text REFERENCES rooms(name),
    content   text NOT NULL,
    timestamp timestamptz NOT NULL DEFAULT now()
);

-- room history: latest N of a room, and paging with id < before
CREATE INDEX IF NOT EXISTS messages_room_id_idx ON messages (room, id) WHERE room IS NOT NULL;

-- Demo schema for the ff-test self-tests.
CREATE TABLE demo_item (
    id   BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

INSERT INTO demo_item (name) VALUES ('seed');

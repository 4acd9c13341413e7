-- Green: the same data after the migration.
--   customers: email renamed to email_address; location (a city name) replaced by
--              location_structured jsonb ({"city": ...}); preferences added.
--   jobs:      quantity became numeric(10,2).
--   orders:    renamed to purchases.
CREATE TABLE customers (
    id                   bigint PRIMARY KEY,
    name                 text NOT NULL,
    email_address        text NOT NULL,
    location_structured  jsonb,
    preferences          jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id           bigint PRIMARY KEY,
    customer_id  bigint NOT NULL,
    quantity     numeric(10,2) NOT NULL,
    description  text
);

CREATE TABLE purchases (
    id           bigint PRIMARY KEY,
    customer_id  bigint NOT NULL,
    total        numeric(12,2) NOT NULL,
    status       text NOT NULL
);

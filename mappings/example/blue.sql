-- Blue: the schema before the migration. pgbridge writes green's rows here after cutover.
CREATE TABLE customers (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    location    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id           bigint PRIMARY KEY,
    customer_id  bigint NOT NULL,
    quantity     integer NOT NULL,
    description  text
);

CREATE TABLE orders (
    id           bigint PRIMARY KEY,
    customer_id  bigint NOT NULL,
    total        numeric(12,2) NOT NULL,
    status       text NOT NULL
);

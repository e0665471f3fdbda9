-- A microservices platform moved off Spark: six services' topics into PostgreSQL tables of
-- revenue, fraud alerts, abandoned carts, inventory velocity and operational metrics; what a
-- service sends that cannot be read goes to the dead-letter topic `dlq.events`.
-- Fill the topics with `weir produce --from-generator microservices --events N`.
-- KAFKA_BOOTSTRAP, TOPIC_PREFIX and PG_URL come from the environment.
CREATE SOURCE orders (
    order_id  TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    amount    DOUBLE NOT NULL,
    items     INT,
    ts        TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '1 minute'
) WITH (
    connector = 'kafka', topic = '${TOPIC_PREFIX:-}order.created',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}', starting_offsets = 'earliest',
    dead_letter_topic = '${TOPIC_PREFIX:-}dlq.events'
);

CREATE SOURCE payments (
    payment_id  TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    amount      DOUBLE,
    method      TEXT,
    ts          TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '1 minute'
) WITH (
    connector = 'kafka', topic = '${TOPIC_PREFIX:-}payment.processed',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}', starting_offsets = 'earliest',
    dead_letter_topic = '${TOPIC_PREFIX:-}dlq.events'
);

CREATE SOURCE cart_adds (
    event_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    product_id  TEXT NOT NULL,
    quantity    INT NOT NULL,
    price       DOUBLE,
    ts          TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '1 minute'
) WITH (
    connector = 'kafka', topic = '${TOPIC_PREFIX:-}cart.item_added',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}', starting_offsets = 'earliest',
    dead_letter_topic = '${TOPIC_PREFIX:-}dlq.events'
);

CREATE SOURCE checkouts (
    event_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    cart_value  DOUBLE,
    ts          TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '1 minute'
) WITH (
    connector = 'kafka', topic = '${TOPIC_PREFIX:-}cart.checkout_initiated',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}', starting_offsets = 'earliest',
    dead_letter_topic = '${TOPIC_PREFIX:-}dlq.events'
);

-- Every topic at once, for the message counts (only the time is read; `_topic` says which).
CREATE SOURCE all_topics (
    ts  TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '1 minute'
) WITH (
    connector = 'kafka',
    topic = '${TOPIC_PREFIX:-}order.created,${TOPIC_PREFIX:-}payment.processed,${TOPIC_PREFIX:-}payment.failed,${TOPIC_PREFIX:-}cart.item_added,${TOPIC_PREFIX:-}cart.checkout_initiated,${TOPIC_PREFIX:-}order.confirmed',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}', starting_offsets = 'earliest'
);

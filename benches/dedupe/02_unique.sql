CREATE TABLE unique_events AS
SELECT id, user_id, amount, ts
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id) AS rn FROM ev)
WHERE rn = 1;

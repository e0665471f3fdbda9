-- 15-minute windows sliding every 5 per merchant, with distinct users (benches/windows.sh).
CREATE TABLE gold.merchant_hop AS
SELECT window_start, window_end, merchant, count(*) AS events, count(DISTINCT user_id) AS users
FROM HOP(events, event_time, INTERVAL '5 minutes', INTERVAL '15 minutes')
GROUP BY window_start, window_end, merchant;

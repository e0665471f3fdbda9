-- Fraud scores: every purchase scored with simple rules, then bucketed into a risk level.
CREATE VIEW purchase_signals AS
SELECT
    event_id, user_id, merchant, amount, payment_method, country, event_time, event_date,
      CASE WHEN is_known_fraud THEN 50 ELSE 0 END
    + CASE WHEN amount > 5000 THEN 30 ELSE 0 END
    + CASE WHEN payment_method = 'crypto' THEN 20 ELSE 0 END
    + CASE WHEN country IN ('NG', 'RU', 'KP', 'VE') THEN 15 ELSE 0 END
    + CASE WHEN date_part('hour', event_time) >= 23 OR date_part('hour', event_time) < 5 THEN 10 ELSE 0 END
    + CASE WHEN date_part('dow', event_time) IN (0, 6) THEN 5 ELSE 0 END
      AS fraud_score
FROM silver.events
WHERE event_type = 'purchase';

CREATE TABLE fraud.scores AS
SELECT
    *,
    CASE
        WHEN fraud_score >= 75 THEN 'CRITICAL'
        WHEN fraud_score >= 50 THEN 'HIGH'
        WHEN fraud_score >= 25 THEN 'MEDIUM'
        WHEN fraud_score >= 10 THEN 'LOW'
        ELSE 'MINIMAL'
    END AS risk_level
FROM purchase_signals;

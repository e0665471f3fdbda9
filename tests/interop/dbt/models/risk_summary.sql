select risk_level, count(*) as purchases, sum(amount) as amount
from {{ source('weir', 'fraud_scores') }}
group by risk_level

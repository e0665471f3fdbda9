select event_date, count(*) as events, count(distinct user_id) as users
from {{ source('weir', 'silver_events') }}
group by event_date

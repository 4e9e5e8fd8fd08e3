-- Stages that came after 002: commands control gave up on (control.v1.command_abandoned), and
-- notifications held back (notify.v1.notification_deferred) or not sent as repeats
-- (notify.v1.notification_suppressed). Values are appended to the Enum8s, so existing rows keep
-- theirs; v_commands / v_notifications rank stages by (time, value), so at one instant an
-- abandonment outranks the failure that caused it.
ALTER TABLE command_events
    MODIFY COLUMN stage Enum8('requested' = 1, 'sent' = 2, 'acknowledged' = 3, 'failed' = 4, 'abandoned' = 5);
ALTER TABLE notification_events
    MODIFY COLUMN stage Enum8('requested' = 1, 'delivered' = 2, 'failed' = 3, 'deferred' = 4, 'suppressed' = 5);

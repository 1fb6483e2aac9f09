-- SPEC §5: the merchant's page and the admin order view say which way the
-- link went and why. One of: text_window_open, text_no_template,
-- template_window_closed, template_after_131047 (on the link message's row),
-- in_confirmation, in_button (on the confirmation's row, which carried it).
-- NULL while it has not gone.
ALTER TABLE outbox ADD COLUMN link_via TEXT;

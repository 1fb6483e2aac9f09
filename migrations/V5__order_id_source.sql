-- SPEC §11: a gateway's order id is the merchant's own where the gateway carries one,
-- else the gateway's; the admin view says which field it came from (e.g.
-- `razorpay payment.notes.order_id`). Set by the first payment that names the order.
ALTER TABLE orders ADD COLUMN order_id_source VARCHAR(64);

-- A gateway payment already recorded stays with its order (Razorpay's payment.captured
-- and order.paid of one payment may carry different id candidates): looked up by id.
CREATE INDEX orders_payment_id ON orders (payment_id);

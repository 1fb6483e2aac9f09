// SPEC §11, proven by code orderlink's authors did not write: the gateways' own SDKs
// (stripe, razorpay and cashfree-pg from npm) check the SPEC appendix vectors, sign
// (Stripe's generateTestHeaderString) or verify (Razorpay's validateWebhookSignature,
// Cashfree's PGVerifyWebhookSignature) each delivery posted to the running orderlink,
// and orderlink must agree with them: what the SDK accepts is processed, what it
// refuses is 401. Nothing here talks to a gateway (Cashfree's error analytics off).
//
//   node .ci/gateway_sdks.js BASE_URL   (RAZORPAY_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET,
//                                        CASHFREE_CLIENT_SECRET: the server's secrets)
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const Razorpay = require("razorpay");
const Stripe = require("stripe");
const { Cashfree, CFEnvironment } = require("cashfree-pg");

const base = process.argv[2];
const first = (name) => {
    const v = (process.env[name] || "").split(/\s+/).filter(Boolean);
    if (!v.length) throw new Error(`${name} is not set`);
    return v[0];
};
const razorpaySecret = first("RAZORPAY_WEBHOOK_SECRET");
const stripeSecret = first("STRIPE_WEBHOOK_SECRET");
const cashfreeSecret = first("CASHFREE_CLIENT_SECRET");
const stripe = new Stripe("sk_test_not_used_offline");
const cashfreeWith = (secret) =>
    new Cashfree(CFEnvironment.SANDBOX, "client-id-unused", secret, undefined, undefined, undefined, false);
const run = Date.now().toString(36);

async function post(path, body, headers) {
    const r = await fetch(base + path, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body,
    });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : null, text };
}
const expectStatus = (resp, status, what) =>
    assert.equal(resp.status, status, `${what}: ${resp.status} ${resp.text}`);
let checks = 0;
const ok = (what) => {
    checks += 1;
    console.log(`ok - ${what}`);
};

async function appendixVectors() {
    // Stripe
    const sBody = '{\n  "id": "evt_test_webhook",\n  "object": "event"\n}';
    const sHeader = "t=1700000000,v1=4f1cd7feda9826e746b7d482c4badebb657398df1099e1046364f6196a230150";
    const evt = stripe.webhooks.constructEvent(sBody, sHeader, "whsec_test_secret", 1e10);
    assert.equal(evt.id, "evt_test_webhook");
    assert.equal(
        stripe.webhooks.generateTestHeaderString({ payload: sBody, secret: "whsec_test_secret", timestamp: 1700000000 }),
        sHeader,
    );
    ok("stripe SDK: SPEC appendix vector verifies and signs identically");
    // Razorpay
    const rBody = '{"entity":"event","event":"payment.captured","payload":{"payment":{"entity":{"id":"pay_DESlfW9H8K9uqM","amount":100,"currency":"INR","order_id":"order_DESlLckIVRkHWj","contact":"+919876543210","notes":[]}}}}';
    assert.equal(
        Razorpay.validateWebhookSignature(rBody, "40d29170f8e2f04ae97e1a2699a0b4b141e4af2949d1c952f2086e226970c4e6", "test_webhook_secret"),
        true,
    );
    ok("razorpay SDK: SPEC appendix vector verifies");
    // Cashfree
    const cBody = '{"data":{"order":{"order_id":"order_OFR_2","order_amount":2.00},"customer_details":{"customer_phone":"9908734801"}},"type":"PAYMENT_SUCCESS_WEBHOOK"}';
    const ev = cashfreeWith("test_client_secret").PGVerifyWebhookSignature(
        "h5uLps6DC3qtbImT4kGXQF1Dt/yRMigJm89rjunfOAQ=", cBody, "1746427759733");
    assert.equal(ev.type, "PAYMENT_SUCCESS_WEBHOOK");
    ok("cashfree-pg SDK: SPEC appendix vector verifies");
}

async function stripeRoute() {
    const body = JSON.stringify({
        id: `evt_sdk_${run}`, object: "event", type: "checkout.session.completed",
        data: { object: {
            id: `cs_test_sdk_${run}`, object: "checkout.session", amount_total: 49900, currency: "inr",
            client_reference_id: `SDK-ST-${run}`, customer_details: { phone: "+919876543210" },
            metadata: {}, payment_intent: `pi_sdk_${run}`, payment_status: "paid",
        } },
    });
    const header = stripe.webhooks.generateTestHeaderString({ payload: body, secret: stripeSecret });
    const resp = await post("/webhooks/stripe", body, { "stripe-signature": header });
    expectStatus(resp, 200, "stripe signed by the SDK");
    assert.equal(resp.json.status, "processed");
    assert.equal(resp.json.order_id, `SDK-ST-${run}`);
    ok("stripe: a delivery signed by generateTestHeaderString is processed");
    const stale = stripe.webhooks.generateTestHeaderString({
        payload: body, secret: stripeSecret, timestamp: Math.floor(Date.now() / 1000) - 600 });
    assert.throws(() => stripe.webhooks.constructEvent(body, stale, stripeSecret));
    expectStatus(await post("/webhooks/stripe", body, { "stripe-signature": stale }), 401, "stale");
    ok("stripe: a 10-minute-old signature is refused by the SDK and by orderlink");
    const other = stripe.webhooks.generateTestHeaderString({ payload: body, secret: "whsec_someone_else" });
    expectStatus(await post("/webhooks/stripe", body, { "stripe-signature": other }), 401, "other secret");
    ok("stripe: another endpoint's secret is refused");
}

async function razorpayRoute() {
    const body = JSON.stringify({
        entity: "event", event: "payment.captured", contains: ["payment"],
        payload: { payment: { entity: {
            id: `pay_sdk_${run}`, entity: "payment", amount: 49900, currency: "INR", status: "captured",
            order_id: `order_sdk_${run}`, contact: "+919876543210", notes: { order_id: `SDK-RZ-${run}` },
        } } },
        created_at: Math.floor(Date.now() / 1000),
    });
    const sig = crypto.createHmac("sha256", razorpaySecret).update(body).digest("hex");
    assert.equal(Razorpay.validateWebhookSignature(body, sig, razorpaySecret), true);
    const resp = await post("/webhooks/razorpay", body, { "x-razorpay-signature": sig, "x-razorpay-event-id": `evt_sdk_${run}` });
    expectStatus(resp, 200, "razorpay");
    assert.equal(resp.json.status, "processed");
    ok("razorpay: a signature validateWebhookSignature accepts is processed");
    const tampered = body.replace("49900", "100");
    assert.equal(Razorpay.validateWebhookSignature(tampered, sig, razorpaySecret), false);
    expectStatus(await post("/webhooks/razorpay", tampered, { "x-razorpay-signature": sig }), 401, "tampered");
    ok("razorpay: a body the SDK refuses is refused by orderlink");
}

async function cashfreeRoute() {
    const body = `{"data":{"order":{"order_id":"SDK-CF-${run}","order_amount":170.00,"order_currency":"INR","order_tags":null},"payment":{"cf_payment_id":"${Date.now()}","payment_status":"SUCCESS","payment_amount":170.00,"payment_currency":"INR"},"customer_details":{"customer_phone":"9908734801"}},"type":"PAYMENT_SUCCESS_WEBHOOK"}`;
    const ts = String(Date.now());
    const sig = crypto.createHmac("sha256", cashfreeSecret).update(ts + body).digest("base64");
    cashfreeWith(cashfreeSecret).PGVerifyWebhookSignature(sig, body, ts); // throws when it disagrees
    const resp = await post("/webhooks/cashfree", body, { "x-webhook-signature": sig, "x-webhook-timestamp": ts });
    expectStatus(resp, 200, "cashfree");
    assert.equal(resp.json.status, "processed");
    ok("cashfree: a signature PGVerifyWebhookSignature accepts is processed (amount 170.00)");
    const tampered = body.replace(/170\.00/g, "170");
    assert.throws(() => cashfreeWith(cashfreeSecret).PGVerifyWebhookSignature(sig, tampered, ts));
    expectStatus(await post("/webhooks/cashfree", tampered, { "x-webhook-signature": sig, "x-webhook-timestamp": ts }), 401, "tampered");
    ok("cashfree: 170.00 re-serialised as 170 is refused by the SDK and by orderlink");
}

(async () => {
    await appendixVectors();
    await stripeRoute();
    await razorpayRoute();
    await cashfreeRoute();
    console.log(`${checks} checks passed`);
})().catch((e) => {
    console.error(e);
    process.exit(1);
});

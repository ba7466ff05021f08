package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
)

const shopifySecret = "shpss_0123456789abcdef0123456789abcdef"

func shopifyMAC(secret string, body []byte) []byte {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return mac.Sum(nil)
}

func TestShopify(t *testing.T) {
	body := []byte(`{"id":820982911946154508,"email":"jon@example.com"}`)
	v := newScheme(t, "shopify", Config{Secrets: []string{shopifySecret}})
	sig := base64.StdEncoding.EncodeToString(shopifyMAC(shopifySecret, body))
	h := http.Header{}
	h.Set("X-Shopify-Hmac-Sha256", sig)
	h.Set("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
	h.Set("X-Shopify-Topic", "orders/create")

	t.Run("valid", func(t *testing.T) {
		ev := wantValid(t, v, h, body, testNow)
		if ev.ID != "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043" || ev.Type != "orders/create" {
			t.Errorf("event = %+v", ev)
		}
	})
	t.Run("header name case", func(t *testing.T) {
		hh := http.Header{}
		hh.Set("x-shopify-hmac-SHA256", sig)
		wantValid(t, v, hh, body, testNow)
	})
	t.Run("no webhook id", func(t *testing.T) {
		ev := wantValid(t, v, withHeader(h, "X-Shopify-Webhook-Id", ""), body, testNow)
		if ev.ID != BodyDigestID(body) {
			t.Errorf("id = %q, want the body digest", ev.ID)
		}
	})
	t.Run("signed by Sign", func(t *testing.T) {
		got := signWith(t, v, body, "w1", testNow)
		if got.Get("X-Shopify-Hmac-Sha256") != sig || got.Get("X-Shopify-Webhook-Id") != "w1" {
			t.Errorf("Sign = %v", got)
		}
	})
	t.Run("unpadded and URL-safe base64", func(t *testing.T) {
		mac := shopifyMAC(shopifySecret, body)
		wantValid(t, v, withHeader(h, "X-Shopify-Hmac-Sha256", base64.RawStdEncoding.EncodeToString(mac)), body, testNow)
		wantValid(t, v, withHeader(h, "X-Shopify-Hmac-Sha256", base64.URLEncoding.EncodeToString(mac)), body, testNow)
	})
	t.Run("tampered body", func(t *testing.T) {
		wantInvalid(t, v, h, []byte(strings.Replace(string(body), "jon", "jan", 1)), testNow, ReasonSignature, shopifySecret)
	})
	t.Run("wrong secret", func(t *testing.T) {
		other := newScheme(t, "shopify", Config{Secrets: []string{"shpss_other"}})
		wantInvalid(t, other, h, body, testNow, ReasonSignature, "shpss_other", shopifySecret)
	})
	t.Run("rotation: second secret matches", func(t *testing.T) {
		rot := newScheme(t, "shopify", Config{Secrets: []string{"shpss_old", shopifySecret}})
		wantValid(t, rot, h, body, testNow)
	})
	t.Run("missing header", func(t *testing.T) {
		wantInvalid(t, v, withHeader(h, "X-Shopify-Hmac-Sha256", ""), body, testNow, ReasonSignature, shopifySecret)
	})
	for _, bad := range []string{
		hex.EncodeToString(shopifyMAC(shopifySecret, body)), // hex, not base64
		"sha256=" + sig,
		sig[:20],
		"!!!!" + sig[4:],
		base64.StdEncoding.EncodeToString(append(shopifyMAC(shopifySecret, body), 0)),
	} {
		t.Run("malformed "+bad, func(t *testing.T) {
			wantInvalid(t, v, withHeader(h, "X-Shopify-Hmac-Sha256", bad), body, testNow, ReasonSignature, shopifySecret)
		})
	}
	t.Run("config", func(t *testing.T) {
		_, err := shopifyPreset.build(Config{Secrets: []string{"a", ""}})
		wantConfigError(t, err, "secret")
	})
}

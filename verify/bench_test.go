package verify

import (
	"bytes"
	"fmt"
	"sort"
	"testing"
)

// benchBody is a JSON event of about size bytes, with an id and a type.
func benchBody(size int) []byte {
	head := []byte(`{"id":"evt_bench","type":"payment.succeeded","payment_id":"p1","status":"PAID","data":{"id":"d1"},"pad":"`)
	tail := []byte(`"}`)
	return append(append(head, bytes.Repeat([]byte{'a'}, size-len(head)-len(tail))...), tail...)
}

// BenchmarkVerify verifies a valid delivery with every scheme (standard
// twice: v1 HMAC and v1a Ed25519) on 1 KiB and 64 KiB bodies.
func BenchmarkVerify(b *testing.B) {
	verifiers := fuzzVerifiers(b)
	names := make([]string, 0, len(verifiers))
	for n := range verifiers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		v := verifiers[name]
		for _, size := range []int{1 << 10, 64 << 10} {
			body := benchBody(size)
			h := signWith(b, v, body, "evt_bench", testNow)
			b.Run(fmt.Sprintf("%s/%dKiB", name, size>>10), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					if _, err := v.Verify(h, body, testNow); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

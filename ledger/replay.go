package ledger

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// replayRecord is a value of the replay bucket: what the ledger remembers of
// one replay key (stored under the SHA-256 of the key):
//
//	state (1 byte) ‖ expires (unix ns, 8 bytes, big endian)
//
// with an entry expires ‖ digest in the expiry index, by which the sweep
// deletes it when it expires.
type replayRecord struct {
	state   byte
	expires int64
}

// replayRecordLen is the length of an encoded replayRecord.
const replayRecordLen = 1 + 8

// States of a replay record.
const (
	recordDelivered byte = 'd' // the upstream accepted the event
	recordAccepted  byte = 'a' // the spool holds the event; a replay is a duplicate
)

// parseReplay reads a value of the replay bucket; ok false for nil or a
// value of another length.
func parseReplay(v []byte) (r replayRecord, ok bool) {
	if len(v) != replayRecordLen {
		return replayRecord{}, false
	}
	return replayRecord{state: v[0], expires: int64(binary.BigEndian.Uint64(v[1:]))}, true
}

// encode is the stored form of r.
func (r replayRecord) encode() []byte {
	v := make([]byte, replayRecordLen)
	v[0] = r.state
	binary.BigEndian.PutUint64(v[1:], uint64(r.expires))
	return v
}

// remembered says whether r makes its key a duplicate at now (unix ns):
// delivered or accepted, window not ended.
func (r replayRecord) remembered(now int64) bool {
	return (r.state == recordDelivered || r.state == recordAccepted) && now < r.expires
}

// getReplay returns the replay record of d in tx.
func getReplay(tx *bolt.Tx, d *digest) (replayRecord, bool) {
	return parseReplay(tx.Bucket(bucketReplay).Get(d[:]))
}

// putReplay writes r as the replay record of d, with its expiry index entry,
// in place of the old one; added says the key was not in the bucket.
func putReplay(tx *bolt.Tx, d *digest, r replayRecord) (added bool, err error) {
	replay, expiry := tx.Bucket(bucketReplay), tx.Bucket(bucketExpiry)
	expiry.FillPercent = 1 // appended to, mostly
	old := replay.Get(d[:])
	if prev, ok := parseReplay(old); ok {
		if err := expiry.Delete(expiryKey(prev.expires, d)); err != nil {
			return false, err
		}
	}
	if err := replay.Put(d[:], r.encode()); err != nil {
		return false, err
	}
	return old == nil, expiry.Put(expiryKey(r.expires, d), nil)
}

// deleteReplay deletes the replay record of d and its expiry index entry;
// deleted says there was one.
func deleteReplay(tx *bolt.Tx, d *digest) (deleted bool, err error) {
	replay, expiry := tx.Bucket(bucketReplay), tx.Bucket(bucketExpiry)
	old := replay.Get(d[:])
	if old == nil {
		return false, nil
	}
	if prev, ok := parseReplay(old); ok {
		if err := expiry.Delete(expiryKey(prev.expires, d)); err != nil {
			return false, err
		}
	}
	return true, replay.Delete(d[:])
}

// expiryKey is the key of the expiry index: expires ‖ digest.
func expiryKey(expires int64, d *digest) []byte {
	k := make([]byte, 8+len(d))
	binary.BigEndian.PutUint64(k, uint64(expires))
	copy(k[8:], d[:])
	return k
}

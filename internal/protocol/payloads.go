package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// payloads is the object store bucket where bodies too large for one NATS
// message wait for their reader. Both sides bind it lazily, creating it if
// absent, so that the common case (everything inline) needs no JetStream at
// all and neither program has to start first.
type payloads struct {
	js     jetstream.JetStream
	bucket string

	mu  sync.Mutex
	obs jetstream.ObjectStore
}

func newPayloads(nc *nats.Conn, prefix string) (*payloads, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &payloads{js: js, bucket: PayloadBucket(prefix)}, nil
}

// store binds the bucket; only writers create it, since a reader of a
// missing bucket cannot find its object anyway.
func (p *payloads) store(ctx context.Context, create bool) (jetstream.ObjectStore, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.obs != nil {
		return p.obs, nil
	}
	obs, err := p.js.ObjectStore(ctx, p.bucket)
	if create && errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = p.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      p.bucket,
			Description: "WasmWiz execution bodies too large for one NATS message; readers delete them",
			TTL:         PayloadTTL,
			Storage:     jetstream.FileStorage,
		})
		// The other program may have created it in the meantime, possibly
		// with a different description or TTL; binding is enough.
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = p.js.ObjectStore(ctx, p.bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("payload bucket %s: %w", p.bucket, err)
	}
	p.obs = obs
	return obs, nil
}

// forget drops the bound bucket after a failure, so that the next call binds
// (or re-creates) it: an operator may have deleted it.
func (p *payloads) forget() {
	p.mu.Lock()
	p.obs = nil
	p.mu.Unlock()
}

func (p *payloads) put(ctx context.Context, kind string, data []byte) (*objectRef, error) {
	obs, err := p.store(ctx, true)
	if err != nil {
		return nil, err
	}
	name := kind + "-" + nuid.Next()
	if _, err := obs.PutBytes(ctx, name, data); err != nil {
		p.forget()
		return nil, fmt.Errorf("put %s in %s: %w", name, p.bucket, err)
	}
	return &objectRef{Name: name, Size: int64(len(data))}, nil
}

// take reads an object of at most limit bytes and deletes it. A failed delete
// is not the reader's problem: the bucket's TTL removes the object anyway.
func (p *payloads) take(ctx context.Context, ref *objectRef, limit int64) ([]byte, error) {
	if ref.Size > limit {
		return nil, fmt.Errorf("%w: object %s is %d bytes, limit %d", ErrMalformed, ref.Name, ref.Size, limit)
	}
	obs, err := p.store(ctx, false)
	if err != nil {
		return nil, err
	}
	res, err := obs.Get(ctx, ref.Name)
	if err != nil {
		if !errors.Is(err, jetstream.ErrObjectNotFound) {
			p.forget()
		}
		return nil, fmt.Errorf("get %s from %s: %w", ref.Name, p.bucket, err)
	}
	data, err := readObject(res, ref)
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", ref.Name, p.bucket, err)
	}
	_ = obs.Delete(ctx, ref.Name)
	return data, nil
}

func readObject(res jetstream.ObjectResult, ref *objectRef) ([]byte, error) {
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return nil, err
	}
	if int64(info.Size) != ref.Size {
		return nil, fmt.Errorf("%w: object is %d bytes, reference says %d", ErrMalformed, info.Size, ref.Size)
	}
	data := make([]byte, ref.Size)
	if _, err := io.ReadFull(res, data); err != nil {
		return nil, err
	}
	// Reading to EOF is what makes the client verify the object's digest.
	if n, err := res.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%w: object longer than %d bytes", ErrMalformed, ref.Size)
		}
		return nil, err
	}
	return data, nil
}

// remove deletes an object its reader will never take, best effort.
func (p *payloads) remove(ctx context.Context, ref *objectRef) {
	obs, err := p.store(ctx, false)
	if err != nil {
		return
	}
	_ = obs.Delete(ctx, ref.Name)
}

package iceberg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"strings"

	iceio "github.com/apache/iceberg-go/io"
	"github.com/aws/smithy-go"
	"github.com/google/uuid"
)

// ErrWarehouse marks a warehouse that cannot work as configured (no such bucket, access denied, wrong keys, a
// directory that cannot be written): trying again does not help, the configuration must change.
var ErrWarehouse = errors.New("warehouse unusable as configured")

// CheckWarehouse checks the form of a warehouse location: file:///absolute/path, or s3://bucket[/prefix] (s3a://
// is the same).
func CheckWarehouse(location string) error {
	u, err := url.Parse(location)
	if err != nil {
		return errors.New("not a URL: use file:///absolute/path or s3://bucket/prefix")
	}
	switch u.Scheme {
	case "file":
		if (u.Host != "" && u.Host != "localhost") || !path.IsAbs(u.Path) || u.Path == "/" {
			return errors.New("a file:// warehouse needs an absolute folder, e.g. file:///var/lib/philotes/warehouse (three slashes)")
		}
	case "s3", "s3a":
		if u.Host == "" {
			return errors.New("an s3:// warehouse needs a bucket, e.g. s3://my-bucket/philotes")
		}
		if u.User != nil || u.RawQuery != "" {
			return errors.New("an s3:// warehouse is s3://bucket/prefix: credentials go in PHILOTES_S3_* settings")
		}
	default:
		return errors.New("use file:///absolute/path or s3://bucket/prefix")
	}
	return nil
}

// probeWarehouse writes, reads back and removes a small object under the warehouse, so a warehouse that cannot
// work is found at start-up, not at the first batch. Errors that configuration must fix wrap ErrWarehouse; the
// others (the store is not reachable yet) are worth retrying.
func probeWarehouse(ctx context.Context, props map[string]string, location string) error {
	fsys, err := iceio.LoadFS(ctx, props, location)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWarehouse, err)
	}
	wfs, ok := fsys.(iceio.WriteFileIO)
	if !ok {
		return fmt.Errorf("%w: the file IO for %s cannot write files", ErrWarehouse, location)
	}
	rfs, ok := fsys.(iceio.ReadFileIO)
	if !ok {
		return fmt.Errorf("%w: the file IO for %s cannot read files", ErrWarehouse, location)
	}
	name := strings.TrimSuffix(location, "/") + "/.philotes-probe/" + uuid.NewString()
	if strings.HasPrefix(location, "file:") {
		u, _ := url.Parse(name)
		name = u.Path
		if mk, ok := fsys.(iceio.MkdirAllIO); ok {
			if err := mk.MkdirAll(path.Dir(name)); err != nil {
				return classifyWarehouseErr("create the folder of", location, err)
			}
		}
	}
	payload := []byte("philotes warehouse probe\n")
	if err := wfs.WriteFile(name, payload); err != nil {
		return classifyWarehouseErr("write", location, err)
	}
	got, err := rfs.ReadFile(name)
	if err != nil {
		return classifyWarehouseErr("read back", location, err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("%w: %s: a probe object read back different bytes than were written", ErrWarehouse, location)
	}
	if err := fsys.Remove(name); err != nil {
		return classifyWarehouseErr("delete", location, err)
	}
	return nil
}

// permanentS3Codes are the S3 error codes that no retry cures.
var permanentS3Codes = map[string]string{
	"NoSuchBucket":                 "the bucket does not exist: create it, or fix the bucket in the warehouse URL",
	"InvalidBucketName":            "the bucket name is not valid",
	"AccessDenied":                 "access denied: the credentials may not write this bucket and prefix (s3:PutObject, s3:GetObject, s3:DeleteObject, s3:ListBucket)",
	"AllAccessDisabled":            "all access to this bucket is disabled",
	"InvalidAccessKeyId":           "the access key id is unknown to the server: check PHILOTES_S3_ACCESS_KEY_ID",
	"XAdminUserNotFound":           "the access key id is unknown to the server: check PHILOTES_S3_ACCESS_KEY_ID", // Versity S3 Gateway
	"SignatureDoesNotMatch":        "the secret access key does not match the key id: check PHILOTES_S3_SECRET_ACCESS_KEY",
	"AuthorizationHeaderMalformed": "the request's region does not match the bucket's: check PHILOTES_S3_REGION",
	"PermanentRedirect":            "the bucket is in another region or needs another endpoint: check PHILOTES_S3_REGION and PHILOTES_S3_ENDPOINT",
	"InvalidToken":                 "the session token is not valid: check PHILOTES_S3_SESSION_TOKEN",
}

func classifyWarehouseErr(op, location string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if hint, ok := permanentS3Codes[apiErr.ErrorCode()]; ok {
			return fmt.Errorf("%w: %s: %s a probe object: %s (%s)", ErrWarehouse, location, op, hint, apiErr.ErrorCode())
		}
	}
	if strings.Contains(err.Error(), "failed to resolve service endpoint") {
		// The SDK could not even build the request URL: a setting is missing or wrong, e.g. no region.
		return fmt.Errorf("%w: %s: %s a probe object: the S3 request cannot be built from the settings: set PHILOTES_S3_REGION (or AWS_REGION), and check PHILOTES_S3_ENDPOINT: %w", ErrWarehouse, location, op, err)
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %s: %s a probe file: permission denied: the worker's user must be able to write the folder", ErrWarehouse, location, op)
	}
	var pathErr *fs.PathError
	if strings.HasPrefix(location, "file:") && errors.As(err, &pathErr) {
		return fmt.Errorf("%w: %s: %s a probe file: %w", ErrWarehouse, location, op, err)
	}
	return fmt.Errorf("warehouse %s: %s a probe object: %w", location, op, err)
}

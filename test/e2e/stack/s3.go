package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/philotes/philotes-worker/test/s3test"
)

// The object store: the Versity S3 Gateway (the same server and version as the integration tests) on loopback
// inside the namespace. Pods reach it at S3Endpoint; the test process through S3Client or AWSConfig.
const (
	S3Endpoint = "http://127.0.0.1:9000"
	S3Region   = s3test.Region
)

// S3Credentials are the object store's root keys, made up for each stack.
type S3Credentials struct {
	AccessKeyID, SecretAccessKey string
}

func (s *Stack) startS3(ctx context.Context) error {
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("s3 secret: %w", err)
	}
	s.S3 = S3Credentials{AccessKeyID: "philotes-e2e", SecretAccessKey: hex.EncodeToString(secret)}
	args, err := s3test.Args("127.0.0.1:9000", s.S3.AccessKeyID, s.S3.SecretAccessKey, filepath.Join(s.Dir, "s3"))
	if err != nil {
		return err
	}
	p, err := s.startProcess("s3", s.bins.S3, args, nil, nil)
	if err != nil {
		return err
	}
	return s.waitFor(ctx, p, 30*time.Second, "s3 server", func(ctx context.Context) error {
		// Any HTTP answer (an anonymous request gets 403) means it serves.
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, S3Endpoint+"/", nil)
		if err != nil {
			return err
		}
		resp, err := s.HTTP.Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
}

// AWSConfig is an AWS SDK configuration for the stack's object store that dials through the namespace: give it
// to iceberg-go with utils.WithAwsConfig to read the lake from the test process.
func (s *Stack) AWSConfig() *aws.Config {
	return &aws.Config{
		Region:       S3Region,
		Credentials:  credentials.NewStaticCredentialsProvider(s.S3.AccessKeyID, s.S3.SecretAccessKey, ""),
		HTTPClient:   &http.Client{Transport: &http.Transport{DialContext: s.NS.DialContext}},
		BaseEndpoint: aws.String(S3Endpoint),
	}
}

// S3Properties are the Iceberg file IO properties for the stack's object store.
func (s *Stack) S3Properties() map[string]string {
	return s3test.Properties(S3Endpoint, s.S3.AccessKeyID, s.S3.SecretAccessKey)
}

// CreateBucket creates a bucket in the stack's object store.
func (s *Stack) CreateBucket(ctx context.Context, name string) error {
	c := s3.NewFromConfig(*s.AWSConfig(), func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// S3Secret is the name of the Secret ChartLake creates with the object store's keys, under the worker chart's
// default key names.
const S3Secret = "philotes-s3"

// ChartLake prepares a lake in the object store for a worker chart release in namespace ns, as an operator
// would: a bucket, and the keys in Secret S3Secret. It returns the chart's worker.iceberg values for it (an
// s3:// warehouse with endpoint, region and existingSecret) and the warehouse URL.
func (s *Stack) ChartLake(ctx context.Context, ns, bucket string) (map[string]any, string, error) {
	if err := s.CreateBucket(ctx, bucket); err != nil {
		return nil, "", err
	}
	core := s.Kube.CoreV1()
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, "", fmt.Errorf("create namespace %s: %w", ns, err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: S3Secret, Namespace: ns},
		StringData: map[string]string{"access-key-id": s.S3.AccessKeyID, "secret-access-key": s.S3.SecretAccessKey}}
	if _, err := core.Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, "", fmt.Errorf("create secret %s/%s: %w", ns, S3Secret, err)
	}
	warehouse := "s3://" + bucket + "/lake"
	return map[string]any{
		"warehouse": warehouse,
		"s3":        map[string]any{"endpoint": S3Endpoint, "region": S3Region, "existingSecret": S3Secret},
	}, warehouse, nil
}

package stack

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// keyPair is a certificate with its private key.
type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// certSpec describes one certificate to issue.
type certSpec struct {
	commonName string
	orgs       []string
	dnsNames   []string
	ips        []net.IP
	usages     []x509.ExtKeyUsage
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

// newCA makes a self-signed certificate authority.
func newCA(name string) (*keyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-sign %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", name, err)
	}
	return &keyPair{cert: cert, key: key}, nil
}

// issue signs a leaf certificate for spec with ca.
func (ca *keyPair) issue(spec certSpec) (*keyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: spec.commonName, Organization: spec.orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  spec.usages,
		DNSNames:     spec.dnsNames,
		IPAddresses:  spec.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", spec.commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", spec.commonName, err)
	}
	return &keyPair{cert: cert, key: key}, nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// write stores the pair as <base>.crt and <base>.key.
func (p *keyPair) write(base string) error {
	k, err := keyPEM(p.key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".crt", certPEM(p.cert), 0o644); err != nil {
		return fmt.Errorf("write cert: %w", err)
	}
	if err := os.WriteFile(base+".key", k, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

// PKI holds the paths of every certificate and key the stack uses.
type PKI struct {
	Dir string
	// CA signs the apiserver's serving certificate and the client certificates.
	CA, APIServer, Admin string
	// FrontProxyCA and FrontProxyClient authenticate the aggregator to the
	// KEDA metrics adapter.
	FrontProxyCA, FrontProxyClient string
	// ServiceAccountKey signs service-account tokens (.key private, .pub public).
	ServiceAccountKey string
	// KEDADir holds ca.crt, tls.crt and tls.key, the layout both KEDA binaries read.
	KEDADir string
}

// Crt and Key name a pair's files.
func Crt(base string) string { return base + ".crt" }

// Key names a pair's private key file.
func Key(base string) string { return base + ".key" }

func loopbackIPs(extra ...string) []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, s := range extra {
		ips = append(ips, net.ParseIP(s))
	}
	return ips
}

// generatePKI writes a fresh PKI under dir.
func generatePKI(dir string) (*PKI, error) {
	p := &PKI{
		Dir:               dir,
		CA:                filepath.Join(dir, "ca"),
		APIServer:         filepath.Join(dir, "apiserver"),
		Admin:             filepath.Join(dir, "admin"),
		FrontProxyCA:      filepath.Join(dir, "front-proxy-ca"),
		FrontProxyClient:  filepath.Join(dir, "front-proxy-client"),
		ServiceAccountKey: filepath.Join(dir, "sa"),
		KEDADir:           filepath.Join(dir, "keda"),
	}
	if err := os.MkdirAll(p.KEDADir, 0o755); err != nil {
		return nil, fmt.Errorf("create pki dir: %w", err)
	}
	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}

	ca, err := newCA("philotes-e2e-ca")
	if err != nil {
		return nil, err
	}
	fpCA, err := newCA("philotes-e2e-front-proxy-ca")
	if err != nil {
		return nil, err
	}
	kedaCA, err := newCA("philotes-e2e-keda-ca")
	if err != nil {
		return nil, err
	}
	type leaf struct {
		ca   *keyPair
		spec certSpec
		base string
	}
	leaves := []leaf{
		{ca, certSpec{
			commonName: "kube-apiserver",
			dnsNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local"},
			ips:    loopbackIPs("10.96.0.1"),
			usages: server,
		}, p.APIServer},
		{ca, certSpec{commonName: "admin", orgs: []string{"system:masters"}, usages: client}, p.Admin},
		{fpCA, certSpec{commonName: "front-proxy-client", usages: client}, p.FrontProxyClient},
		{kedaCA, certSpec{
			commonName: "keda",
			dnsNames: []string{"localhost",
				"keda-metrics-apiserver.keda.svc", "keda-metrics-apiserver.keda.svc.cluster.local",
				"keda-operator.keda.svc", "keda-operator.keda.svc.cluster.local"},
			ips:    loopbackIPs(),
			usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}, filepath.Join(p.KEDADir, "tls")},
	}
	for _, l := range leaves {
		kp, err := l.ca.issue(l.spec)
		if err != nil {
			return nil, err
		}
		if err := kp.write(l.base); err != nil {
			return nil, err
		}
	}
	for base, kp := range map[string]*keyPair{p.CA: ca, p.FrontProxyCA: fpCA, filepath.Join(p.KEDADir, "ca"): kedaCA} {
		if err := kp.write(base); err != nil {
			return nil, err
		}
	}

	sa, err := newKey()
	if err != nil {
		return nil, err
	}
	saPriv, err := keyPEM(sa)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("marshal service-account public key: %w", err)
	}
	if err := os.WriteFile(p.ServiceAccountKey+".key", saPriv, 0o600); err != nil {
		return nil, fmt.Errorf("write service-account key: %w", err)
	}
	if err := os.WriteFile(p.ServiceAccountKey+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return nil, fmt.Errorf("write service-account public key: %w", err)
	}
	return p, nil
}

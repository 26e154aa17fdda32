// Package mtlsgo builds crypto/tls configurations for programs that talk to `mtls server`
// or are reached by `mtls connector` (docs/go.md): the certificate chain and key read from
// the PEM files mtls writes (read again when they change: renewal), trust in the CA's root
// only, TLS 1.3, and the SPIFFE ID (URI SAN) of a peer.
package mtlsgo

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"
)

// Roots reads a PEM bundle of root certificates (the CA's root.pem): the trust store.
func Roots(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// Keypair is a certificate chain and key read from PEM files, read again when either file
// changed since (mtls agent, mtls renew or `mtls ca issue --force` replaced them): each new
// handshake then presents the new certificate; connections already open keep theirs. Files
// that cannot be loaded (a key that does not match its certificate) keep the previous pair.
type Keypair struct {
	certFile, keyFile string

	mu      sync.Mutex
	current *tls.Certificate
	stamp   string
}

// NewKeypair loads the pair once; an error if it cannot.
func NewKeypair(certFile, keyFile string) (*Keypair, error) {
	k := &Keypair{certFile: certFile, keyFile: keyFile}
	if _, err := k.get(); err != nil {
		return nil, err
	}
	return k, nil
}

func stampOf(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%d/%d;", st.ModTime().UnixNano(), st.Size())
		}
	}
	return b.String()
}

func (k *Keypair) get() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	stamp := stampOf(k.certFile, k.keyFile)
	if k.current != nil && stamp == k.stamp {
		return k.current, nil
	}
	pair, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.current != nil {
			log.Printf("certificate not reloaded (the previous one is kept): %v", err)
			return k.current, nil
		}
		return nil, err
	}
	if k.current != nil {
		log.Printf("certificate reloaded: %s", k.certFile)
	}
	k.current, k.stamp = &pair, stamp
	return k.current, nil
}

// ClientConfig is a client's configuration: our chain for the server, the server's chain
// checked against roots and its name against serverName (the DNS name or IP dialled: crypto/tls
// checks it whenever ServerName is set, never skip it with InsecureSkipVerify).
func ClientConfig(k *Keypair, roots *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return k.get()
		},
	}
}

// ServerConfig is a server's configuration: a client certificate is required and verified
// against roots; allowed decides on its SPIFFE IDs (TLS authenticates, the service
// authorises: what --allow-uri is for mtls server).
func ServerConfig(k *Keypair, roots *x509.CertPool, allowed func(ids []string) bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  roots,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return k.get()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			if ids := SPIFFEIDs(cs.PeerCertificates[0]); !allowed(ids) {
				return fmt.Errorf("client %v not allowed", ids)
			}
			return nil
		},
	}
}

// SPIFFEIDs are the URI subjectAltNames of a certificate (spiffe://trust-domain/path).
func SPIFFEIDs(cert *x509.Certificate) []string {
	ids := make([]string, 0, len(cert.URIs))
	for _, u := range cert.URIs {
		ids = append(ids, u.String())
	}
	return ids
}

// Deadline is how long the examples wait for a peer.
const Deadline = 20 * time.Second

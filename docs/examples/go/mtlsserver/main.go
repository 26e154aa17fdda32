// mtlsserver: a Go service that `mtls connector` (or any mutual TLS client of the same CA)
// reaches (docs/go.md): TLS 1.3, a client certificate required and verified against ROOT,
// its SPIFFE ID checked against an allowed prefix, then each line echoed back. The
// certificate files are read again when they change (renewal), without a restart.
//
//	mtlsserver 127.0.0.1:PORT server-chain.pem server.key root.pem spiffe://example.org/ns/prod/
//
// Port 0 picks a free port; "listening on ADDR" is printed when ready.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"example.org/mtls-go/mtlsgo"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: mtlsserver ADDR CHAIN.pem KEY ROOT.pem ALLOWED_URI_PREFIX")
		os.Exit(2)
	}
	log.SetOutput(os.Stdout)
	k, err := mtlsgo.NewKeypair(os.Args[2], os.Args[3])
	if err != nil {
		log.Fatal(err)
	}
	roots, err := mtlsgo.Roots(os.Args[4])
	if err != nil {
		log.Fatal(err)
	}
	prefix := os.Args[5]
	cfg := mtlsgo.ServerConfig(k, roots, func(ids []string) bool {
		for _, id := range ids {
			if strings.HasPrefix(id, prefix) {
				return true
			}
		}
		return false
	})
	ln, err := tls.Listen("tcp", os.Args[1], cfg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c.(*tls.Conn))
	}
}

func serve(c *tls.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(mtlsgo.Deadline))
	if err := c.Handshake(); err != nil {
		log.Printf("refused %s: %v", c.RemoteAddr(), err)
		return
	}
	log.Printf("accepted %v", mtlsgo.SPIFFEIDs(c.ConnectionState().PeerCertificates[0]))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := c.Write([]byte(line)); err != nil {
			return
		}
	}
}

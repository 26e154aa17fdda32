/*
 * A Java service that `mtls connector` (or any mutual TLS client of the same CA) reaches
 * (docs/java.md): TLS 1.3 with a client certificate required, the client's SPIFFE ID
 * checked against an allowed prefix (TLS authenticates; deciding who may talk is the
 * service's job, as --allow-uri is mtls server's), then each line echoed back.
 *
 *   MTLS_KEYSTORE_PASSWORD=... MTLS_TRUSTSTORE_PASSWORD=... \
 *       java MtlsServer PORT server.p12 truststore.p12 spiffe://example.org/ns/prod/
 *
 * PORT 0 picks a free port; "listening on PORT" is printed when ready. The keystore is
 * read again when its file changes (MtlsTls.Reloading): new handshakes use the renewed
 * certificate without a restart.
 */
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.cert.X509Certificate;
import java.util.List;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;

public final class MtlsServer {
	public static void main(String[] args) throws Exception {
		if (args.length != 4) {
			System.err.println("usage: java MtlsServer PORT KEYSTORE.p12 TRUSTSTORE.p12 ALLOWED_URI_PREFIX");
			System.exit(2);
		}
		SSLContext ctx = MtlsTls.context(Path.of(args[1]), MtlsTls.password("MTLS_KEYSTORE_PASSWORD"),
				Path.of(args[2]), MtlsTls.password("MTLS_TRUSTSTORE_PASSWORD"));
		String allowed = args[3];
		try (SSLServerSocket ss = (SSLServerSocket) ctx.getServerSocketFactory().createServerSocket(
				Integer.parseInt(args[0]), 50, InetAddress.getLoopbackAddress())) {
			ss.setNeedClientAuth(true);
			System.out.println("listening on " + ss.getLocalPort());
			System.out.flush();
			while (true) {
				try (SSLSocket s = (SSLSocket) ss.accept()) {
					s.setSoTimeout(20000);
					s.startHandshake();
					X509Certificate client = (X509Certificate) s.getSession().getPeerCertificates()[0];
					List<String> ids = MtlsTls.uris(client);
					if (ids.stream().noneMatch(u -> u.startsWith(allowed))) {
						System.out.println("refused " + ids);
						continue;
					}
					System.out.println("accepted " + ids);
					BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
					OutputStream out = s.getOutputStream();
					for (String line; (line = in.readLine()) != null;) {
						out.write((line + "\n").getBytes(StandardCharsets.UTF_8));
						out.flush();
					}
				} catch (Exception e) {
					System.out.println("failed " + e);
				}
				System.out.flush();
			}
		}
	}
}

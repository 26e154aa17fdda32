/*
 * A Java client of a service behind `mtls server` (docs/java.md): connects with its
 * PKCS#12 identity, checks the server's certificate against the truststore AND its name
 * (HTTPS endpoint identification: the host it dialled must be a DNS or IP name of the
 * certificate), optionally checks the server's SPIFFE ID, sends one line, prints the answer.
 *
 *   MTLS_KEYSTORE_PASSWORD=... MTLS_TRUSTSTORE_PASSWORD=... \
 *       java MtlsClient HOST PORT client.p12 truststore.p12 [spiffe://expected/server/id]
 *
 * Exit 0 when the line came back, 1 when refused (the reason on stderr), 2 on usage.
 */
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.cert.X509Certificate;
import java.util.List;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;

public final class MtlsClient {
	public static void main(String[] args) {
		if (args.length < 4 || args.length > 5) {
			System.err.println("usage: java MtlsClient HOST PORT KEYSTORE.p12 TRUSTSTORE.p12 [EXPECTED_SERVER_URI]");
			System.exit(2);
		}
		try {
			SSLContext ctx = MtlsTls.context(Path.of(args[2]), MtlsTls.password("MTLS_KEYSTORE_PASSWORD"),
					Path.of(args[3]), MtlsTls.password("MTLS_TRUSTSTORE_PASSWORD"));
			try (SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(args[0], Integer.parseInt(args[1]))) {
				SSLParameters p = s.getSSLParameters();
				/* without this, Java checks the chain but not that it belongs to HOST */
				p.setEndpointIdentificationAlgorithm("HTTPS");
				s.setSSLParameters(p);
				s.setSoTimeout(20000);
				s.startHandshake();
				X509Certificate server = (X509Certificate) s.getSession().getPeerCertificates()[0];
				List<String> ids = MtlsTls.uris(server);
				if (args.length == 5 && !ids.contains(args[4]))
					throw new SecurityException("the server is " + ids + ", not " + args[4]);
				OutputStream out = s.getOutputStream();
				out.write("hello from java\n".getBytes(StandardCharsets.UTF_8));
				out.flush();
				BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8));
				String line = in.readLine();
				if (line == null)
					throw new java.io.EOFException("the server closed the connection without an answer "
							+ "(our certificate refused?)");
				System.out.println(line);
			}
		} catch (Exception e) {
			System.err.println("refused: " + e);
			System.exit(1);
		}
	}
}

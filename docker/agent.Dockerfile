# The Cube agent for the Compose sandbox (docker/compose.yml); settings come from .env.
FROM python:3.11-slim

COPY agent /src/agent
RUN pip install --no-cache-dir '/src/agent[fast]' \
	&& useradd --system --home-dir /var/lib/cube-agent --create-home cube-agent \
	&& install -d -o cube-agent -m 0750 /etc/cube/agent
COPY docker/agent-entrypoint.sh /usr/local/bin/agent-entrypoint.sh

USER cube-agent
EXPOSE 7001
ENTRYPOINT ["/usr/local/bin/agent-entrypoint.sh"]

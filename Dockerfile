# One image for every DashFrog process: `dashfrog worker`, `dashfrog api`, `dashfrog up`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY client ./client
COPY schemas ./schemas
COPY streams ./streams
COPY storage ./storage
COPY web ./web
RUN pip install --no-cache-dir '.[processor,storage,clickhouse,web,broker]'
COPY examples ./examples
ENV DASHFROG_API_HOST=0.0.0.0
EXPOSE 8000
ENTRYPOINT ["dashfrog"]
CMD ["up"]

"""The benchmark harness of issue #5 (``crm-pipeline bench``, ``make bench``).

``traffic``  realistic report traffic (channel mix, Indonesian texts, redeliveries, repeats, flood day)
``stack``    a private Kafka/Redis/PostgreSQL instance on other ports, so a dev's stack is never touched
``baseline`` the raw aiokafka consume → produce pass-through the pipeline is compared with
``monitor``  CPU and peak memory of every process (psutil)
``runner``   the phases, the JSON results, the plot and the table
"""
